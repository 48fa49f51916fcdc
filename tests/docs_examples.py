"""Examples of the documentation that are not tests themselves; included there as they stand
and run by the tests named beside each."""

# example: json_values start
from django_llmstream import json_values, stream


async def print_colours() -> None:
    prompt = "List three colours as a JSON array of objects with a name and a hex code."
    async for colour in json_values(stream(prompt)):
        print(colour["name"], colour["hex"])  # each one as soon as its "}" arrives


# example: json_values end
# (run by tests/test_structured.py::test_json_values_example)
