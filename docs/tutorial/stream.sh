# Fetch the page once for its CSRF cookie, then post a prompt to the one-step endpoint.
curl -s -c cookies.txt http://127.0.0.1:8000/ > /dev/null
curl -sN -b cookies.txt \
  -H "X-CSRFToken: $(awk '$6 == "csrftoken" {print $7}' cookies.txt)" \
  -H "Content-Type: application/json" \
  -d '{"prompt": "Hello! Who are you?"}' \
  http://127.0.0.1:8000/llmstream/stream/
