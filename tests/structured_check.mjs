// llmstream.js's splitters on the cases of tests/test_structured.py (run by that test with
// node, on a copy of llmstream.js named llmstream.mjs): prints the failures as JSON.
import { LineSplitter, SentenceSplitter, JSONValueSplitter, lines, jsonValues, Client, Turn }
  from "./llmstream.mjs";
import { readFileSync } from "node:fs";

const SPLITTERS = { lines: LineSplitter, sentences: SentenceSplitter, json: JSONValueSplitter };
const cases = JSON.parse(readFileSync(process.argv[2], "utf8"));
const failures = [];
for (const [kind, text, expected] of cases) {
  const chars = Array.from(text);
  const ways = [];
  for (let i = 0; i <= chars.length; i += 1) {
    ways.push([chars.slice(0, i).join(""), chars.slice(i).join("")]);
  }
  for (let n = 1; n <= chars.length; n += 1) {
    const pieces = [];
    for (let i = 0; i < chars.length; i += n) pieces.push(chars.slice(i, i + n).join(""));
    ways.push(pieces);
  }
  for (const pieces of ways) {
    const splitter = new SPLITTERS[kind]();
    let out = [];
    for (const piece of pieces) out = out.concat(splitter.push(piece));
    out = out.concat(splitter.end());
    if (JSON.stringify(out) !== JSON.stringify(expected)) {
      failures.push({ kind, pieces, out, expected });
      break;
    }
  }
}

// Over a Turn: listening starts at the call, deltas are split, done ends the iteration.
const client = new Client({ storage: null, resume: false, fetch: () => Promise.reject() });
const turn = new Turn(client);
const got = [];
const reading = (async () => {
  // example: jsonValues start
  for await (const item of jsonValues(turn)) {
    got.push(item); // e.g. list.append(row(item)): each row as soon as its "}" arrives
  }
  // example: jsonValues end
})();
turn._handle("start", { turn: "t", conversation: "c" }, "1");
turn._handle("delta", { text: '[{"a": 1}, {"b"' }, "2");
turn._handle("delta", { text: ': 2}]' }, "3");
turn._handle("done", { finish_reason: "stop", usage: {} }, "4");
await reading;
if (JSON.stringify(got) !== JSON.stringify([{ a: 1 }, { b: 2 }])) failures.push({ turn: got });

// A turn that fails: the lines before the error, then an LLMStreamError.
const failing = new Turn(client);
const seen = [];
let thrown = null;
const reading2 = (async () => {
  try {
    for await (const line of lines(failing)) seen.push(line);
  } catch (error) {
    thrown = error;
  }
})();
failing._handle("delta", { text: "first\nsec" }, "2");
failing._handle("error", { type: "upstream_error", message: "boom", retryable: true }, "3");
await reading2;
if (JSON.stringify(seen) !== '["first"]' || !thrown || thrown.type !== "upstream_error") {
  failures.push({ failing: seen, thrown: String(thrown) });
}
console.log(JSON.stringify(failures));
