#!/usr/bin/env python3
"""Renders the chat templates of tests/fixtures/chat_templates/ with jinja2, set up as Hugging Face
transformers sets it up for apply_chat_template, and writes what each conversation becomes to
tests/fixtures/chat_templates/expected.json. test_jinja.cpp renders the same cases with lserve's
interpreter and compares byte for byte.

    .venv/bin/python scripts/make-chat-fixtures.py   # jinja2 pinned in scripts/requirements.txt

lserve's JSON objects keep their keys sorted, so conversations are given to jinja2 with sorted
keys too (messages: role and content first, as lserve builds them).
"""
import json
from datetime import datetime
from pathlib import Path

import jinja2
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

ROOT = Path(__file__).resolve().parent.parent
DIR = ROOT / "tests" / "fixtures" / "chat_templates"

# Per template: the special tokens its model's tokenizer gives bos_token and eos_token.
TEMPLATES = {
    "smollm2.jinja": ("<|im_start|>", "<|im_end|>"),
    "llama3.jinja": ("<|begin_of_text|>", "<|eot_id|>"),
    "llama3_1.jinja": ("<|begin_of_text|>", "<|eot_id|>"),
    "qwen2_5.jinja": ("", "<|im_end|>"),
    "mistral.jinja": ("<s>", "</s>"),
    "gemma.jinja": ("<bos>", "<eos>"),
    "phi3.jinja": ("<s>", "<|endoftext|>"),
    "deepseek.jinja": ("<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"),
}

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "City name, e.g. \"Paris\""},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city"],
        },
    },
}

CONVERSATIONS = {
    "user": {"messages": [{"role": "user", "content": "Hello!"}]},
    "system_user": {"messages": [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "What is 2 + 2?"}]},
    "multi_turn": {"messages": [
        {"role": "system", "content": "  Answer in French.\n"},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Bonjour !"},
        {"role": "user", "content": "  How are you?  "}]},
    "multi_turn_no_system": {"messages": [
        {"role": "user", "content": "Name a colour."},
        {"role": "assistant", "content": "<think>easy</think>Blue."},
        {"role": "user", "content": "Another one."}]},
    "content_parts": {"messages": [
        {"role": "user", "content": [{"type": "text", "text": "Describe "},
                                     {"type": "text", "text": "this."}]}]},
    "unicode": {"messages": [
        {"role": "user",
         "content": "h\u00e9llo \u65e5\u672c\u8a9e \"quoted\" 'single' back\\slash\n\ttab \U0001F600"}]},
    "not_alternating": {"messages": [
        {"role": "user", "content": "one"}, {"role": "user", "content": "two"}]},
    "tools_offered": {"tools": [WEATHER_TOOL],
                      "messages": [{"role": "user", "content": "Weather in Paris?"}]},
    "tools": {
        "tools": [WEATHER_TOOL],
        "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call12345", "type": "function",
                 "function": {"name": "get_weather",
                              "arguments": {"city": "Paris", "unit": "celsius"}}}]},
            {"role": "tool", "content": "{\"temperature\": 21.5}", "tool_call_id": "call12345",
             "name": "get_weather"},
            {"role": "user", "content": "Thanks. And in Rome?"}]},
}

KWARGS = {"date_string": "26 Jul 2024"}


def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    # transformers replaces jinja2's tojson (which escapes HTML) with plain json.dumps.
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                      sort_keys=sort_keys)


def raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def strftime_now(format):
    return datetime.now().strftime(format)


def environment():
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env


def sorted_json(x):
    return json.loads(json.dumps(x, sort_keys=True))


def lserve_message(m):
    """The message dict as lserve builds it: role, content, then the other keys sorted."""
    out = {"role": m["role"], "content": sorted_json(m.get("content"))}
    for k in sorted(m):
        if k not in out:
            out[k] = sorted_json(m[k])
    return out


def main():
    env = environment()
    cases = []
    for name, (bos, eos) in TEMPLATES.items():
        template = env.from_string((DIR / name).read_text(encoding="utf-8"))
        for conv_name, conv in CONVERSATIONS.items():
            for add_generation_prompt in (True, False):
                tools = sorted_json(conv["tools"]) if "tools" in conv else None
                case = {"template": name, "conversation": conv_name,
                        "add_generation_prompt": add_generation_prompt}
                try:
                    case["expected"] = template.render(
                        **KWARGS, messages=[lserve_message(m) for m in conv["messages"]],
                        tools=tools, add_generation_prompt=add_generation_prompt,
                        bos_token=bos, eos_token=eos)
                except Exception as e:  # noqa: BLE001 - any failure is an expected error
                    # lserve must refuse these too: with the template's words where it raised.
                    case["error"] = f"{type(e).__name__}: {e}"
                cases.append(case)
    out = {
        "generated_by": "scripts/make-chat-fixtures.py with jinja2 " + jinja2.__version__,
        "special_tokens": {name: {"bos_token": b, "eos_token": e}
                           for name, (b, e) in TEMPLATES.items()},
        "kwargs": KWARGS,
        "conversations": CONVERSATIONS,
        "cases": cases,
    }
    path = DIR / "expected.json"
    path.write_text(json.dumps(out, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    errors = sum("error" in c for c in cases)
    print(f"{path.relative_to(ROOT)}: {len(cases)} cases ({errors} refused by their template)")


if __name__ == "__main__":
    main()
