// lserve's Jinja interpreter against jinja2 as Hugging Face transformers configures it
// (ImmutableSandboxedEnvironment, trim_blocks, lstrip_blocks, loopcontrols, its tojson,
// raise_exception and strftime_now). Every expected string here and in
// tests/fixtures/chat_templates/expected.json was rendered by jinja2 (scripts/make-chat-fixtures.py
// writes the latter).
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <fstream>
#include <map>
#include <sstream>
#include <string>

#include "core/error.h"
#include "test_util.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/jinja/json_value.h"
#include "tokenizer/jinja/template.h"
#include "tokenizer/jinja/value.h"

namespace lserve {
namespace {

using nlohmann::json;

std::string render(const std::string& src, const json& vars = json::object(),
                   const jinja::Limits& limits = {}) {
  jinja::Dict d;
  for (const auto& [k, v] : vars.items()) d.set(k, jinja::from_json(v));
  return jinja::Template(src).render(d, limits);
}

std::string error_of(const std::string& src, const json& vars = json::object(),
                     const jinja::Limits& limits = {}) {
  try {
    return "(rendered) " + render(src, vars, limits);
  } catch (const Error& e) {
    return e.what();
  }
}

struct Case {
  const char* name;
  const char* source;
  const char* vars;
  const char* expected;
};

// Language features, one line each: whitespace control, expressions, printing, tests, filters,
// methods, statements, scoping, undefined values.
const Case kCases[] = {
    {"trim_blocks", "{% if true %}\nyes\n{% endif %}\nend", "{}", "yes\nend"},
    {"lstrip_blocks", "a\n    {% if true %}\n    b\n    {% endif %}\nc", "{}", "a\n    b\nc"},
    {"minus", "a  {{- 'b' -}}  c\n {%- if true -%} \n d {%- endif %}", "{}", "abcd"},
    {"plus", "a\n  {%+ if true +%}\nb{% endif %}", "{}", "a\n  \nb"},
    {"comment", "a\n  {# note #}\nb {#- x -#} c", "{}", "a\nbc"},
    {"raw", "{% raw %}{{ x }}{% endraw %}", "{}", "{{ x }}"},
    {"trailing_newline", "x\n", "{}", "x"},
    {"crlf", "a\r\n{% if true %}\r\nb\r\n{% endif %}\r\n", "{}", "a\nb\n"},
    {"var_no_trim", "{{ 'a' }}\nb", "{}", "a\nb"},
    {"arith",
     "{{ 7 / 2 }} {{ 7 // 2 }} {{ -7 // 2 }} {{ -7 % 3 }} {{ 2 ** 10 }} {{ 1 + 2 * 3 }} {{ (1 + 2) "
     "* 3 }} {{ 1.5 + 1 }} {{ 10 - 2.5 }}",
     "{}", "3.5 3 -4 2 1024 7 9 2.5 7.5"},
    {"floats",
     "{{ 1.0 }} {{ 0.1 + 0.2 }} {{ 1e-5 }} {{ 1e16 }} {{ 123456789.0 }} {{ 2.5e-3 }} {{ -0.0 }}",
     "{}", "1.0 0.30000000000000004 1e-05 1e+16 123456789.0 0.0025 -0.0"},
    {"strings",
     "{{ 'a' + \"b\" }} {{ 'x' ~ 1 ~ none ~ true }} {{ 'ab' * 3 }} {{ 'it\\'s' }} {{ "
     "'\\u00e9\\x41\\n' }}",
     "{}",
     "ab x1NoneTrue ababab it's \xc3\xa9"
     "A\n"},
    {"compare",
     "{{ 1 < 2 < 3 }} {{ 1 < 3 < 2 }} {{ 1 == 1.0 }} {{ 'a' != 'b' }} {{ 'b' >= 'a' }} {{ [1, 2] "
     "== [1, 2] }} {{ true == 1 }}",
     "{}", "True False True True True True True"},
    {"logic",
     "{{ 0 or 'x' }} {{ 'a' and 'b' }} {{ not none }} {{ none or [] }} {{ 1 if false }}|{{ 'y' if "
     "0 else 'n' }}",
     "{}", "x b True [] |n"},
    {"in",
     "{{ 'ell' in 'hello' }} {{ 2 in [1, 2] }} {{ 'k' in {'k': 1} }} {{ 'z' not in 'abc' }} {{ 'v' "
     "in {'k': 'v'} }}",
     "{}", "True True True True False"},
    {"literals",
     "{{ [1, 'a', none, true, 1.5] }} {{ {'a': [1, 2], \"b\": {'c': 'it\\'s'}} }} {{ (1, 2) }} {{ "
     "() }}",
     "{}", "[1, 'a', None, True, 1.5] {'a': [1, 2], 'b': {'c': \"it's\"}} (1, 2) ()"},
    {"subscript",
     "{{ xs[0] }} {{ xs[-1] }} {{ xs[1:] }} {{ xs[:-1] }} {{ xs[::-1] }} {{ xs[::2] }} {{ xs[10] "
     "}}|{{ d['k'] }} {{ d.k }} {{ d.missing }}|",
     "{\"xs\": [1, 2, 3, 4], \"d\": {\"k\": \"v\"}}",
     "1 4 [2, 3, 4] [1, 2, 3] [4, 3, 2, 1] [1, 3] |v v |"},
    {"codepoints",
     "{{ s | length }} {{ s[1] }} {{ s[-1] }} {{ s[1:3] }} {{ s[::-1] }} {{ s | list | length }}",
     "{\"s\": \"h\xc3\xa9"
     "\xe6\x97\xa5"
     "\xf0\x9f\x98\x80"
     "\"}",
     "4 \xc3\xa9"
     " \xf0\x9f\x98\x80"
     " \xc3\xa9"
     "\xe6\x97\xa5"
     " \xf0\x9f\x98\x80"
     "\xe6\x97\xa5"
     "\xc3\xa9"
     "h 4"},
    {"printing", "{{ none }} {{ true }} {{ false }} {{ d }} {{ l }} {{ 'q\"s' }}",
     "{\"d\": {\"a\": \"x'y\", \"b\": null}, \"l\": [\"a\\\"b\", \"c'd\\\"\", \"\\n\\t\\\\\"]}",
     "None True False {'a': \"x'y\", 'b': None} ['a\"b', 'c\\'d\"', '\\n\\t\\\\'] q\"s"},
    {"tests",
     "{{ x is defined }} {{ y is defined }} {{ y is undefined }} {{ none is none }} {{ 's' is "
     "string }} {{ {} is mapping }} {{ [] is iterable }} {{ 's' is iterable }} {{ 1 is number }} "
     "{{ 1.5 is number }} {{ [] is sequence }} {{ true is true }} {{ 0 is false }} {{ 3 is odd }} "
     "{{ 4 is even }} {{ 9 is divisibleby 3 }} {{ 2 is equalto 2 }} {{ 1 is not string }} {{ 2 is "
     "eq(2) }}",
     "{\"x\": 1}",
     "True False True True True True True True True True True True False True True True True True "
     "True"},
    {"filters_str",
     "{{ '  a b  ' | trim }}|{{ 'xxaxx' | trim('x') }}|{{ 'Hello' | upper }} {{ 'Hello' | lower }} "
     "{{ 'hello wORLD-foo' | title }} {{ 'hELLO world' | capitalize }} {{ 'aaa' | replace('a', "
     "'b', 2) }} {{ 42 | string }} {{ '<a>' | safe }}",
     "{}", "a b|a|HELLO hello Hello World-Foo Hello world bba 42 <a>"},
    {"filters_num",
     "{{ '42' | int }} {{ '4.7' | int }} {{ 'x' | int }} {{ 'x' | int(7) }} {{ 3.9 | int }} {{ "
     "'2.5' | float }} {{ 2 | float }} {{ -3 | abs }} {{ 2.567 | round(2) }} {{ 2.5 | round }}",
     "{}", "42 4 0 7 3 2.5 2.0 3 2.57 2.0"},
    {"filters_seq",
     "{{ xs | length }} {{ xs | first }} {{ xs | last }} {{ xs | join(', ') }} {{ xs | reverse | "
     "list }} {{ xs | sort }} {{ [3, 1, 3] | unique | list }} {{ xs | sum }} {{ xs | min }} {{ xs "
     "| max }} {{ 'abc' | list }} {{ [] | first }}|",
     "{\"xs\": [3, 1, 2]}", "3 3 2 3, 1, 2 [2, 1, 3] [1, 2, 3] [3, 1] 6 1 3 ['a', 'b', 'c'] |"},
    {"filters_dict",
     "{% set d = {'b': 1, 'a': 2} %}{{ d | items | list }} {{ d | length }} {{ d | dictsort }} {% "
     "for k, v in d.items() %}{{ k }}={{ v }};{% endfor %} {{ d | list }}",
     "{}", "[('b', 1), ('a', 2)] 2 [('a', 2), ('b', 1)] b=1;a=2; ['b', 'a']"},
    {"default",
     "{{ x | default('d') }} {{ y | default('d') }} {{ '' | default('d') }} {{ '' | default('d', "
     "true) }} {{ none | d('n') }} {{ x | d }}",
     "{\"y\": \"set\"}", "d set  d None "},
    {"select",
     "{{ ms | selectattr('role', 'equalto', 'user') | map(attribute='content') | join(',') }} {{ "
     "ms | rejectattr('role', 'equalto', 'user') | list | length }} {{ ms | selectattr('tool') | "
     "list | length }} {{ [1, 2, 3, 4] | select('odd') | list }} {{ ['a', 'b'] | map('upper') | "
     "list }} {{ ms | map(attribute='x', default='-') | join }}",
     "{\"ms\": [{\"role\": \"user\", \"content\": \"a\"}, {\"role\": \"assistant\", \"content\": "
     "\"b\", \"tool\": 1}, {\"role\": \"user\", \"content\": \"c\"}]}",
     "a,c 1 1 [1, 3] ['A', 'B'] ---"},
    {"tojson",
     "{{ v | tojson }}|{{ v | tojson(indent=2) }}|{{ {} | tojson(indent=2) }} {{ [] | tojson }} {{ "
     "'h\xc3\xa9"
     "\\n\"<>&' | tojson }} {{ 1.5 | tojson }} {{ none | tojson }} {{ {'b': 1, 'a': 2} | "
     "tojson(sort_keys=true) }}",
     "{\"v\": {\"a\": [1, {\"b\": null}], \"c\": true, \"s\": \"x\\u0001\x7f"
     "\"}}",
     "{\"a\": [1, {\"b\": null}], \"c\": true, \"s\": \"x\\u0001\x7f"
     "\"}|{\n  \"a\": [\n    1,\n    {\n      \"b\": null\n    }\n  ],\n  \"c\": true,\n  \"s\": "
     "\"x\\u0001\x7f"
     "\"\n}|{} [] \"h\xc3\xa9"
     "\\n\\\"<>&\" 1.5 null {\"a\": 2, \"b\": 1}"},
    {"methods",
     "{{ 'hello'.startswith('he') }} {{ 'hello'.endswith(('x', 'lo')) }} {{ '  x '.strip() }}|{{ "
     "'xxyxx'.lstrip('x') }} {{ 'a,b,,c'.split(',') }} {{ ' a  b '.split() }} {{ 'a b c'.split(' "
     "', 1) }} {{ 'aXbX'.replace('X', '-') }} {{ 'Ab'.upper() }} {{ 'Ab'.lower() }} {{ "
     "'hello'.find('l') }} {{ 'a-b'.title() }} {{ ','.join(['a', 'b']) }} {{ "
     "'l1\\nl2\\n'.splitlines() }}",
     "{}",
     "True True x|yxx ['a', 'b', '', 'c'] ['a', 'b'] ['a', 'b c'] a-b- AB ab 2 A-B a,b ['l1', "
     "'l2']"},
    {"dict_methods",
     "{{ d.get('a') }} {{ d.get('z') }} {{ d.get('z', 0) }} {{ d.keys() | list }} {{ d.values() | "
     "list }} {{ d.items() | list }}",
     "{\"d\": {\"a\": 1, \"b\": [2]}}", "1 None 0 ['a', 'b'] [1, [2]] [('a', 1), ('b', [2])]"},
    {"if",
     "{% for x in [1, 2, 3] %}{% if x == 1 %}one{% elif x == 2 %}two{% else %}many{% endif %} {% "
     "endfor %}",
     "{}", "one two many "},
    {"loop",
     "{% for x in 'abc' %}{{ loop.index0 }}{{ loop.index }}{{ loop.revindex }}{{ loop.revindex0 "
     "}}{{ loop.first }}{{ loop.last }}{{ loop.length }}{{ loop.previtem | default('-') }}{{ "
     "loop.nextitem | default('-') }} {% endfor %}",
     "{}", "0132TrueFalse3-b 1221FalseFalse3ac 2310FalseTrue3b- "},
    {"loop_else_filter",
     "{% for x in [] %}x{% else %}empty{% endfor %} {% for x in range(10) if x is odd %}{{ x }}/{{ "
     "loop.index }}/{{ loop.length }} {% endfor %}",
     "{}", "empty 1/1/5 3/2/5 5/3/5 7/4/5 9/5/5 "},
    {"break_continue",
     "{% for x in range(10) %}{% if x == 2 %}{% continue %}{% endif %}{% if x == 5 %}{% break %}{% "
     "endif %}{{ x }}{% endfor %}",
     "{}", "0134"},
    {"range", "{{ range(3) | list }} {{ range(1, 7, 2) | list }} {{ range(3, 0, -1) | list }}",
     "{}", "[0, 1, 2] [1, 3, 5] [3, 2, 1]"},
    {"scoping",
     "{% set x = 1 %}{% for i in [1, 2] %}{{ x }}{% set x = x + 10 %}{{ x }},{% endfor %}{{ x "
     "}}|{% if true %}{% set y = 3 %}{% endif %}{{ y }}",
     "{}", "111,111,1|3"},
    {"namespace",
     "{% set ns = namespace(n=0, s='') %}{% for i in range(4) %}{% set ns.n = ns.n + i %}{% set "
     "ns.s = ns.s ~ i %}{% endfor %}{{ ns.n }} {{ ns.s }}",
     "{}", "6 0123"},
    {"unpack",
     "{% set a, b = [1, 2] %}{{ a }}{{ b }} {% for k, v in [['x', 1], ['y', 2]] %}{{ k }}{{ v }}{% "
     "endfor %}",
     "{}", "12 x1y2"},
    {"block_set", "{% set t %}\n  inner {{ 1 + 1 }}\n{% endset %}[{{ t }}]", "{}", "[  inner 2\n]"},
    {"macro",
     "{% macro greet(name, punct='!') %}Hi {{ name }}{{ punct }}{{ g }}{% endmacro %}{% set g = "
     "'#' %}{{ greet('A') }} {{ greet('B', '?') }} {{ greet(punct='.', name='C') }}",
     "{}", "Hi A!# Hi B?# Hi C.#"},
    {"macro_recursive",
     "{% macro f(n) %}{% if n > 0 %}{{ n }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(5) }}", "{}",
     "54321"},
    {"filter_block", "{% filter upper %}abc {{ 'd' }}{% endfilter %}", "{}", "ABC D"},
    {"undefined",
     "[{{ x }}] [{{ x | length }}] [{{ x ~ 'a' }}] [{{ n.attr }}] [{{ d.a }}] [{% for i in x %}{{ "
     "i }}{% endfor %}] [{{ x is defined }}] [{{ not x }}]",
     "{\"n\": null, \"d\": {}}", "[] [0] [a] [] [] [] [False] [True]"},
    {"ws_mixed",
     "{%- for m in ms %}\n  <{{ m }}>\n  {%- if loop.last %}\n    last\n  {% endif %}\n{% endfor "
     "%}\n",
     "{\"ms\": [\"a\", \"b\"]}", "  <a>  <b>    last\n"},
    {"messages_like",
     "{% for message in messages %}{{ message.role }}: {{ message['content'] | trim }}\n{% endfor "
     "%}",
     "{\"messages\": [{\"role\": \"user\", \"content\": \" hi \"}]}", "user: hi\n"},
    {"more_0", "{{ 'a b c'.split(' ') }}", "{}", "['a', 'b', 'c']"},
    {"more_1", "{{ '  a  '.lstrip() }}|", "{}", "a  |"},
    {"more_2", "{{ 'abc'.rstrip('c') }}", "{}", "ab"},
    {"more_3", "{{ 3 * 'ab' }}", "{}", "ababab"},
    {"more_4", "{{ [1] * 3 }}", "{}", "[1, 1, 1]"},
    {"more_5", "{{ (1,) }}", "{}", "(1,)"},
    {"more_6", "{{ (1, 2) + (3,) }}", "{}", "(1, 2, 3)"},
    {"more_7", "{{ 10 % 3 }} {{ -10 % 3 }} {{ 10 % -3 }} {{ 5.5 % 2 }} {{ -5.5 // 2 }}", "{}",
     "1 2 -2 1.5 -3.0"},
    {"more_8", "{{ 2 ** -1 }} {{ 2.0 ** 2 }} {{ 7 / 7 }}", "{}", "0.5 4.0 1.0"},
    {"more_9", "{{ 1e300 * 1e300 }} {{ -1e300 * 1e300 }}", "{}", "inf -inf"},
    {"more_10",
     "{{ 0.1 }} {{ 1/3 }} {{ 100.0 }} {{ 1e15 }} {{ 123456789012345678.0 }} {{ 0.00012 }}", "{}",
     "0.1 0.3333333333333333 100.0 1000000000000000.0 1.2345678901234568e+17 0.00012"},
    {"more_11", "{{ 'x' if none }}|{{ none if true }}|", "{\"x\": {\"y\": 1}}", "|None|"},
    {"more_12", "{{ [1, 2, 3] | join }} {{ [1, 'a'] | join('-') }}", "{}", "123 1-a"},
    {"more_13", "{{ {'a': 1} | tojson(indent=1) }}", "{}", "{\n \"a\": 1\n}"},
    {"more_14", "{{ [[]] | tojson(indent=2) }}", "{}", "[\n  []\n]"},
    {"more_15", "{{ [{}] | tojson(indent=2) }}", "{}", "[\n  {}\n]"},
    {"more_16", "{{ 'A\\tB' | tojson }} {{ '\\u2028' | tojson }}", "{}",
     "\"A\\tB\" \"\xe2\x80\xa8"
     "\""},
    {"more_17", "{{ 'a\\u00a0b' }}|{{ ['a\\u00a0b'] }}|{{ ['\\x00'] }}|{{ ['\\u200b'] }}",
     "{\"x\": {\"y\": 1}}",
     "a\xc2\xa0"
     "b|['a\\xa0b']|['\\x00']|['\\u200b']"},
    {"more_18",
     "{{ 'hello world' | title }} {{ \"they're bill's\" | title }} {{ 'x-y z(w' | title }}",
     "{\"x\": {\"y\": 1}}", "Hello World They're Bill's X-Y Z(W"},
    {"more_19", "{{ 'ab' | center(6) if false else 'n' }}", "{}", "n"},
    {"more_20", "{% for a, b in {'x': 1}.items() %}{{ a }}{{ b }}{% endfor %}",
     "{\"x\": {\"y\": 1}}", "x1"},
    {"more_21", "{% for c in {'x': 1, 'y': 2} %}{{ c }}{% endfor %}", "{\"x\": {\"y\": 1}}", "xy"},
    {"more_23",
     "{% for i in [1,2] %}{% for j in [3,4] %}{{ loop.index }}{{ i }}{% endfor %}{{ loop.index "
     "}}{% endfor %}",
     "{\"x\": {\"y\": 1}}", "1121112222"},
    {"more_24",
     "{% set x = [1,2,3] %}{{ x[1:2] }}{{ x[-2:] }}{{ x[:100] }}{{ x[5:] }}{{ x[::-2] }}",
     "{\"x\": {\"y\": 1}}", "[2][2, 3][1, 2, 3][][3, 1]"},
    {"more_25", "{{ 'abcdef'[1:-1:2] }}", "{}", "bd"},
    {"more_26", "{{ 1 in [1.0] }} {{ 'a' in ['a'] }} {{ none in [none] }}", "{}", "True True True"},
    {"more_27", "{{ [1,2] == (1,2) }} {{ {'a': 1} == {'a': 1} }}", "{}", "False True"},
    {"more_28", "{{ 'abc' < 'abd' }} {{ [1, 2] < [1, 3] }} {{ true < 2 }}", "{}", "True True True"},
    {"more_29", "{{ x is sequence }} {{ x is iterable }} {{ x is mapping }}", "{\"x\": {\"y\": 1}}",
     "True True True"},
    {"more_30",
     "{{ 1 is integer }} {{ true is integer }} {{ 1.0 is float }} {{ true is boolean }} {{ true is "
     "number }}",
     "{}", "True False True True True"},
    {"more_31", "{{ '' is lower }} {{ 'ABC' is upper }} {{ 'aB' is lower }}", "{}",
     "False True False"},
    {"more_32", "{% macro m() %}{{ varargs }}{{ kwargs }}{% endmacro %}{{ m(1, 2, a=3) }}", "{}",
     "(1, 2){'a': 3}"},
    {"more_33", "{% macro m(a, b) %}[{{ a }}|{{ b }}]{% endmacro %}{{ m(1) }}", "{}", "[1|]"},
    {"more_34", "{{ none | string }} {{ true | string }} {{ 1.50 | string }}", "{}",
     "None True 1.5"},
    {"more_35",
     "{{ '3' | int + 1 }} {{ ' 4 ' | int }} {{ '0x10' | int }} {{ '1e3' | int }} {{ '1_000' | int "
     "}}",
     "{\"x\": {\"y\": 1}}", "4 4 0 1000 1000"},
    {"more_36", "{{ '1e3' | float }} {{ 'inf' | float }} {{ ' 2 ' | float }} {{ 'nan' | float }}",
     "{}", "1000.0 inf 2.0 nan"},
    {"more_37",
     "{{ [3, 1, 2] | sort(reverse=true) }} {{ ['b', 'A', 'a'] | sort }} {{ [{'k': 2}, {'k': 1}] | "
     "sort(attribute='k') }}",
     "{}", "[3, 2, 1] ['A', 'a', 'b'] [{'k': 1}, {'k': 2}]"},
    {"more_38", "{{ [1, 2, 2, 1] | unique | list }} {{ 'aabb' | unique | list }}", "{}",
     "[1, 2] ['a', 'b']"},
    {"more_39",
     "{{ [1,2,3] | first }} {{ 'abc' | first }} {{ 'abc' | last }} {{ {'a': 1} | first }}", "{}",
     "1 a c a"},
    {"more_40", "{{ {'b': 2, 'a': 1} | dictsort }} {{ {'b': 2, 'a': 1} | items | list }}", "{}",
     "[('a', 1), ('b', 2)] [('b', 2), ('a', 1)]"},
    {"more_41",
     "{{ 'a\\nb\\n\\nc' | indent(2) }}|{{ 'a\\nb' | indent(2, true) }}|{{ 'a\\n\\nb' | indent(2, "
     "blank=true) }}",
     "{}", "a\n  b\n\n  c|  a\n  b|a\n  \n  b"},
    {"more_42", "{{ '<&>\"\\'' | e }} {{ '<a>' | escape }}", "{}",
     "&lt;&amp;&gt;&#34;&#39; &lt;a&gt;"},
    {"more_43",
     "{{ [1,2,3] | sum }} {{ [1.5, 2] | sum }} {{ [] | sum }} {{ [3,1] | min }} {{ ['b','a'] | max "
     "}}",
     "{\"x\": {\"y\": 1}}", "6 3.5 0 1 b"},
    {"more_44", "{{ 'a' ~ 1.0 ~ [1] ~ {'a': none} }}", "{}", "a1.0[1]{'a': None}"},
    {"more_45",
     "{{ -3 | abs }} {{ -3.5 | abs }} {{ 3.14159 | round(3) }} {{ 2.675 | round(2) }} {{ 3.7 | "
     "round(0, 'floor') }} {{ 3.2 | round(0, 'ceil') }}",
     "{}", "3 3.5 3.142 2.67 3.0 4.0"},
    {"more_46",
     "{{ 'Hello'.find('z') }} {{ 'hello'.count('l') }} {{ 'h\xc3\xa9"
     "llo'.find('l') }} {{ 'a,b'.rsplit(',') if false else 'n' }}",
     "{}", "-1 2 2 n"},
    {"more_47",
     "{{ 'ab\\ncd'.splitlines() }} {{ ''.split() }} {{ ''.split(',') }} {{ 'a  b'.split(' ') }}",
     "{}", "['ab', 'cd'] [] [''] ['a', '', 'b']"},
    {"more_48",
     "{{ 'x'.join('abc') }} {{ '12'.isdigit() }} {{ ''.isdigit() }} {{ 'ab'.isalpha() }} {{ ' "
     "\\t'.isspace() }}",
     "{\"x\": {\"y\": 1}}", "axbxc True False True True"},
    {"more_49", "{{ {'a': 1}.get('a', 5) }} {{ {'a': none}.get('a', 5) }}", "{}", "1 None"},
    {"more_50", "{% set a = 1 %}{% set b = a + 1 %}{% set a = b * 10 %}{{ a }}", "{}", "20"},
    {"more_51", "{% for x in [1,2,3] if x > 1 %}{{ loop.first }}{{ x }}{% else %}none{% endfor %}",
     "{\"x\": {\"y\": 1}}", "True2False3"},
    {"more_52", "{% for x in [] if x %}a{% else %}b{% endfor %}", "{\"x\": {\"y\": 1}}", "b"},
    {"more_53", "{% if 0 %}a{% elif '' %}b{% elif [] %}c{% else %}d{% endif %}", "{}", "d"},
    {"more_54", "  {%- if true %}  x  {% endif -%}  \n  y", "{\"x\": {\"y\": 1}}", "  x  y"},
    {"more_55", "a\n{% if true -%}\n  b\n{%- endif %}\nc", "{}", "a\nbc"},
    {"more_56", "{{ 'a' }}\n{# comment #}\n{{ 'b' }}", "{}", "a\nb"},
    {"more_57", "line1\n  {# c #}  \nline2", "{}", "line1\n  \nline2"},
    {"more_58", "x {%+ if true %} y {% endif %}", "{\"x\": {\"y\": 1}}", "x  y "},
    {"more_59", "  {% raw %}  {{ a }}  {% endraw %}  \nz", "{}", "  {{ a }}    \nz"},
    {"more_60",
     "{% set ns = namespace(a=[]) %}{% set ns.a = ns.a + [1] %}{% set ns.a = ns.a + [2] %}{{ ns.a "
     "}}",
     "{}", "[1, 2]"},
    {"more_61", "{% set n = namespace() %}{% set n.x = 1 %}{{ n.x }}{{ n.y }}|",
     "{\"x\": {\"y\": 1}}", "1|"},
    {"more_62", "{{ dict(a=1, b='x') }} {{ namespace(a=1).a }}", "{\"x\": {\"y\": 1}}",
     "{'a': 1, 'b': 'x'} 1"},
    {"more_63", "{{ range(5)[1:3] | list }} {{ range(0) | list }} {{ range(2, -2, -1) | list }}",
     "{}", "[1, 2] [] [2, 1, 0, -1]"},
    {"more_64", "{{ messages[0].role }}{{ messages[-1]['content'][:3] }}",
     "{\"messages\": [{\"role\": \"system\", \"content\": \"sys\"}, {\"role\": \"user\", "
     "\"content\": \"h\xc3\xa9"
     "llo there\"}, {\"role\": \"assistant\", \"content\": \"ok\", \"tool_calls\": null}]}",
     "systemok"},
    {"more_65",
     "{{ 'a' is in 'abc' }} {{ 3 is in [1, 2] }} {{ 1 is ne 2 }} {{ 2 is gt 1 }} {{ 2 is ge 2 }} "
     "{{ 1 is lt 1 }}",
     "{}", "True False True True True False"},
    {"more_66", "{{ none is sameas none }} {{ true is sameas true }} {{ 1 is sameas 1 }}", "{}",
     "True True True"},
    {"more_67",
     "{{ [1, 2] | map('string') | join(',') }} {{ [{'a': {'b': 1}}] | map(attribute='a.b') | list "
     "}}",
     "{}", "1,2 [1]"},
    {"more_68",
     "{{ [{'a': 1}, {'a': 2}, {}] | selectattr('a', 'defined') | list | length }} {{ [{'a': 1}, "
     "{'b': 2}] | rejectattr('a') | list }}",
     "{}", "2 [{'b': 2}]"},
    {"more_69",
     "{{ [1, 2, 3, 4] | select('divisibleby', 2) | list }} {{ [1, none, 2] | reject('none') | list "
     "}} {{ [0, 1, '', 'a'] | select | list }}",
     "{}", "[2, 4] [1, 2] [1, 'a']"},
    {"more_70",
     "{{ 'abc' | reverse }} {{ [1,2] | reverse | list }} {{ 'ab' | list | reverse | join }}", "{}",
     "cba [2, 1] ba"},
    {"more_72", "{{ 'x' ~ none }} {{ 'x' + none if false else 'ok' }}", "{\"x\": {\"y\": 1}}",
     "xNone ok"},
    {"more_73",
     "{% filter lower %}ABC{% endfilter %}{% filter replace('a', 'b') %}aaa{% endfilter %}", "{}",
     "abcbbb"},
    {"more_74", "{% set x %}{% for i in range(3) %}{{ i }}{% endfor %}{% endset %}{{ x | length }}",
     "{\"x\": {\"y\": 1}}", "3"},
    {"more_75", "{% for i in range(3) %}{{ i }}{% break %}{% endfor %}", "{}", "0"},
    {"more_76", "{{ 'a' 'b' }}", "{}", "ab"},
    {"more_77", "{{ \"it's\" }} {{ 'say \"hi\"' }} {{ ['it\\'s', 'say \"hi\"', 'both \\' \"'] }}",
     "{}", "it's say \"hi\" [\"it's\", 'say \"hi\"', 'both \\' \"']"},
    {"more_78",
     "{{ '\\\\n' }} {{ '\\\\' }} {{ 'tab\\there' }} {{ '\\101\\x41\\u0041\\U00000041' }} {{ '\\q' "
     "}}",
     "{\"x\": {\"y\": 1}}", "\\n \\ tab\there AAAA \\q"},
    {"more_80", "{{ x.y is defined }} {{ x['y'] is undefined }}", "{\"x\": {\"y\": 1}}",
     "True False"},
    {"more_82", "{{ messages | length > 1 and messages[1].role == 'assistant' }}",
     "{\"messages\": [{\"role\": \"system\", \"content\": \"sys\"}, {\"role\": \"user\", "
     "\"content\": \"h\xc3\xa9"
     "llo there\"}, {\"role\": \"assistant\", \"content\": \"ok\", \"tool_calls\": null}]}",
     "False"},
    {"more_83",
     "{% if messages[0]['role'] == 'system' %}{{ messages[0]['content'] }}{% set loop_messages = "
     "messages[1:] %}{% else %}{% set loop_messages = messages %}{% endif %}{{ loop_messages | "
     "length }}",
     "{\"messages\": [{\"role\": \"system\", \"content\": \"sys\"}, {\"role\": \"user\", "
     "\"content\": \"h\xc3\xa9"
     "llo there\"}, {\"role\": \"assistant\", \"content\": \"ok\", \"tool_calls\": null}]}",
     "sys2"},
    {"more_84", "{{ (messages | first).content }}",
     "{\"messages\": [{\"role\": \"system\", \"content\": \"sys\"}, {\"role\": \"user\", "
     "\"content\": \"h\xc3\xa9"
     "llo there\"}, {\"role\": \"assistant\", \"content\": \"ok\", \"tool_calls\": null}]}",
     "sys"},
    {"case_mapping_0",
     "{{ '\xc3\x9c"
     "n\xc3\xaf"
     "c\xc3\xb6"
     "d\xc3\xa9"
     " \xc3\xbf"
     " strasse' | upper }} {{ '\xc3\x84"
     "\xc3\x96"
     "\xc3\x9c"
     " \xc5\xb8"
     "\xc3\x80"
     "' | lower }} {{ '\xc3\x85"
     "NGSTR\xc3\x96"
     "M' | capitalize }} {{ '\xc3\xa9"
     "lan vital \xc3\xbc"
     "ber' | title }}",
     "{}",
     "\xc3\x9c"
     "N\xc3\x8f"
     "C\xc3\x96"
     "D\xc3\x89"
     " \xc5\xb8"
     " STRASSE \xc3\xa4"
     "\xc3\xb6"
     "\xc3\xbc"
     " \xc3\xbf"
     "\xc3\xa0"
     " \xc3\x85"
     "ngstr\xc3\xb6"
     "m \xc3\x89"
     "lan Vital \xc3\x9c"
     "ber"},
    {"case_mapping_1",
     "{{ '\xce\x91"
     "\xce\x92"
     "\xce\x93"
     " \xce\xb1"
     "\xce\xb2"
     "\xce\xb3"
     " \xce\xac"
     "\xce\xad"
     "' | upper }} {{ '\xce\x91"
     "\xce\x92"
     "\xce\x93"
     "\xce\x94"
     " \xce\x86"
     "\xce\x88"
     "' | lower }} {{ '\xd0\xbf"
     "\xd1\x80"
     "\xd0\xb8"
     "\xd0\xb2"
     "\xd0\xb5"
     "\xd1\x82"
     " \xd0\x9c"
     "\xd0\x98"
     "\xd0\xa0"
     " \xd1\x91"
     "\xd0\x81"
     "' | upper }} {{ '\xd0\x9f"
     "\xd0\xa0"
     "\xd0\x98"
     "\xd0\x92"
     "\xd0\x95"
     "\xd0\xa2"
     " \xd0\x81"
     "' | lower }}",
     "{}",
     "\xce\x91"
     "\xce\x92"
     "\xce\x93"
     " \xce\x91"
     "\xce\x92"
     "\xce\x93"
     " \xce\x86"
     "\xce\x88"
     " \xce\xb1"
     "\xce\xb2"
     "\xce\xb3"
     "\xce\xb4"
     " \xce\xac"
     "\xce\xad"
     " \xd0\x9f"
     "\xd0\xa0"
     "\xd0\x98"
     "\xd0\x92"
     "\xd0\x95"
     "\xd0\xa2"
     " \xd0\x9c"
     "\xd0\x98"
     "\xd0\xa0"
     " \xd0\x81"
     "\xd0\x81"
     " \xd0\xbf"
     "\xd1\x80"
     "\xd0\xb8"
     "\xd0\xb2"
     "\xd0\xb5"
     "\xd1\x82"
     " \xd1\x91"},
    {"case_mapping_2",
     "{{ '\xc4\x85"
     "\xc4\x87"
     "\xc4\x99"
     "\xc5\x82"
     "\xc5\x84"
     "\xc3\xb3"
     "\xc5\x9b"
     "\xc5\xba"
     "\xc5\xbc"
     "' | upper }} {{ '\xc4\x84"
     "\xc4\x86"
     "\xc4\x98"
     "\xc5\x81"
     "\xc5\x83"
     "\xc3\x93"
     "\xc5\x9a"
     "\xc5\xb9"
     "\xc5\xbb"
     "' | lower }} {{ '\xef\xbd\x86"
     "\xef\xbd\x95"
     "\xef\xbd\x8c"
     "\xef\xbd\x8c"
     "' | upper }} {{ '\xef\xbd\x81"
     "\xef\xbd\x82"
     "' | title }}",
     "{}",
     "\xc4\x84"
     "\xc4\x86"
     "\xc4\x98"
     "\xc5\x81"
     "\xc5\x83"
     "\xc3\x93"
     "\xc5\x9a"
     "\xc5\xb9"
     "\xc5\xbb"
     " \xc4\x85"
     "\xc4\x87"
     "\xc4\x99"
     "\xc5\x82"
     "\xc5\x84"
     "\xc3\xb3"
     "\xc5\x9b"
     "\xc5\xba"
     "\xc5\xbc"
     " \xef\xbc\xa6"
     "\xef\xbc\xb5"
     "\xef\xbc\xac"
     "\xef\xbc\xac"
     " \xef\xbc\xa1"
     "\xef\xbd\x82"},
    {"case_mapping_3",
     "{{ '\xe6\x97\xa5"
     "\xe6\x9c\xac"
     "abc def' | title }} {{ '\xe6\x97\xa5"
     "\xe6\x9c\xac"
     "abc'.title() }} {{ 'hello-w\xc3\xb6"
     "rld (x) [y' | title }}",
     "{}",
     "\xe6\x97\xa5"
     "\xe6\x9c\xac"
     "abc Def \xe6\x97\xa5"
     "\xe6\x9c\xac"
     "Abc Hello-W\xc3\xb6"
     "rld (X) [Y"},
    {"case_mapping_4",
     "{{ '\xc2\xb5"
     "' | upper }} {{ '\xc4\xb1"
     "' | upper }} {{ 'abc\xe6\x97\xa5"
     "\xe6\x9c\xac"
     "'.upper() }} {{ '\xc3\xa9"
     "a'.capitalize() }}",
     "{}",
     "\xce\x9c"
     " I ABC\xe6\x97\xa5"
     "\xe6\x9c\xac"
     " \xc3\x89"
     "a"},
};

TEST(Jinja, LanguageMatchesJinja2) {
  for (const Case& c : kCases) {
    SCOPED_TRACE(c.name);
    try {
      EXPECT_EQ(render(c.source, json::parse(c.vars)), c.expected) << c.source;
    } catch (const Error& e) {
      ADD_FAILURE() << c.source << ": " << e.what();
    }
  }
}

TEST(Jinja, ErrorsSayWhatAndWhere) {
  EXPECT_EQ(error_of("{{ x.y }}"), "line 1: 'x' is undefined");
  EXPECT_EQ(error_of("a\n{{ f() }}"), "line 2: 'f' is undefined");
  EXPECT_EQ(error_of("{{ x + 1 }}"), "line 1: 'x' is undefined");
  EXPECT_EQ(error_of("{{ d.a.b }}", {{"d", json::object()}}),
            "line 1: dict object has no attribute 'a'");
  EXPECT_EQ(error_of("{{ 'a' + 1 }}"),
            "line 1: unsupported operand types for +: str object and int object");
  EXPECT_EQ(error_of("{{ 1 / 0 }}"), "line 1: division by zero");
  EXPECT_EQ(error_of("{{ 1 < 'a' }}"),
            "line 1: '<' not supported between a int object and a str object");
  EXPECT_EQ(error_of("\n{% if %}"), "line 2: unexpected '%}'");
  EXPECT_EQ(error_of("{% if true %}x"), "line 1: unexpected end of template; expected {% elif %}");
  EXPECT_EQ(error_of("{{ 1 | frobnicate }}"), "line 1: unknown filter 'frobnicate'");
  EXPECT_EQ(error_of("{{ 1 is frobnicated }}"), "line 1: unknown test 'frobnicated'");
  EXPECT_EQ(error_of("{% set d = {} %}{% set d.x = 1 %}"),
            "line 1: cannot assign attribute 'x' on dict object: only a namespace() takes "
            "attributes");
  EXPECT_EQ(error_of("{% set l = [] %}{{ l.append(1) }}"),
            "line 1: list.append() is not allowed: template values are immutable");
  EXPECT_EQ(error_of("{% for x in 5 %}{% endfor %}"), "line 1: int object is not iterable");
  EXPECT_EQ(error_of("{% include 'x' %}"), "line 1: the statement 'include' is not supported");
  EXPECT_EQ(error_of("{{ 'abc }}"), "line 1: unterminated string literal");
  EXPECT_EQ(error_of("{# never closed"), "line 1: unterminated comment");
  EXPECT_EQ(error_of("{{ 1 + }}"), "line 1: unexpected '}}'");
  EXPECT_EQ(error_of("{{ 9223372036854775807 + 1 }}"),
            "line 1: integer overflow (lserve's integers are 64-bit)");
  EXPECT_EQ(error_of("{{ x | tojson }}"), "line 1: tojson: 'x' is undefined");
}

// Untrusted templates and data: every way to run long or grow large stops with an Error.
TEST(Jinja, LimitsStopRunawayTemplates) {
  jinja::Limits small;
  small.max_loop_iterations = 1000;
  small.max_output_bytes = 4096;
  small.max_call_depth = 16;
  EXPECT_EQ(error_of("{% for i in range(100) %}{% for j in range(100) %}{% endfor %}{% endfor %}",
                     {}, small),
            "line 1: the template runs more than 1000 loop iterations");
  EXPECT_EQ(error_of("{{ range(100000) | length }}", {}, small),
            "line 1: range() is longer than 1000 items");
  EXPECT_EQ(error_of("{% for i in range(900) %}xxxxxxxxxx{% endfor %}", {}, small),
            "line 1: the template output exceeds 4096 bytes");
  EXPECT_EQ(error_of("{{ 'x' * 100000 }}", {}, small),
            "line 1: a repeated string would exceed 4096 bytes");
  EXPECT_EQ(error_of("{{ [1] * 100000 }}", {}, small),
            "line 1: a repeated list would exceed 1000 items");
  // Empty sequences repeated any number of times are empty, without looping n times (found by
  // fuzz_chat_template: 1e8 empty copies took seconds; these would take hours).
  EXPECT_EQ(render("{{ 4000000000000 * '' }}|{{ ([] * 4000000000000) | length }}"), "|0");
  EXPECT_EQ(error_of("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}", {}, small),
            "line 1: macro calls nest deeper than 16");
  EXPECT_EQ(error_of("{{ " + std::string(500, '(') + "1" + std::string(500, ')') + " }}"),
            "line 1: the template nests deeper than 100 levels");
  EXPECT_EQ(error_of("{{ " + std::string(300, '[') + std::string(300, ']') + " }}"),
            "line 1: the template nests deeper than 100 levels");
  std::string deep_ifs;
  for (int i = 0; i < 300; ++i) deep_ifs += "{% if true %}";
  EXPECT_EQ(error_of(deep_ifs), "line 1: the template nests deeper than 100 levels");
  EXPECT_EQ(error_of("{% set ns = namespace(x=[]) %}{% for i in range(300) %}"
                     "{% set ns.x = [ns.x] %}{% endfor %}"),
            "line 1: lists and dicts nest deeper than 256 levels");
  EXPECT_EQ(error_of("{% set ns = namespace() %}{% set ns.self = [ns] %}"),
            "line 1: a namespace cannot hold a namespace (nor a list or dict holding one)");
  // The defaults allow what real conversations need: a long document in one message.
  const std::string doc(1 << 20, 'a');
  EXPECT_EQ(render("{{ m | trim | length }}", {{"m", doc}}), std::to_string(doc.size()));
}

TEST(Jinja, StrftimeNowAndRaiseExceptionAsHuggingFaceProvides) {
  ChatTemplate t = ChatTemplate::from_source(
      "{{ strftime_now('%Y') | length }} {{ strftime_now('%d %b %Y') | length }}", "t");
  EXPECT_EQ(t.apply({}, true), "4 11");
  const ChatTemplate raising = ChatTemplate::from_source(
      "x{% if messages | length > 1 %}{{ raise_exception('Only one message, please') }}"
      "{% endif %}",
      "t");
  const std::vector<ChatMessage> two = {{"user", "a"}, {"assistant", "b"}};
  try {
    raising.apply(two, true);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "the chat template refused the conversation: Only one message, please");
  }
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in) << path;
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// A fixture conversation as the server hands it over: role and string content as fields, the
// rest (content parts or null, tool_calls, tool_call_id, name) as extra.
std::vector<ChatMessage> messages_of(const json& conv) {
  std::vector<ChatMessage> out;
  for (const json& m : conv.at("messages")) {
    ChatMessage msg;
    msg.role = m.at("role").get<std::string>();
    json extra = json::object();
    for (const auto& [k, v] : m.items()) {
      if (k == "role") continue;
      if (k == "content" && v.is_string()) {
        msg.content = v.get<std::string>();
      } else {
        extra[k] = v;
      }
    }
    if (!extra.empty()) msg.extra = extra;
    out.push_back(std::move(msg));
  }
  return out;
}

// The template families of tests/fixtures/chat_templates/ on every conversation, with and
// without the generation prompt: byte for byte what jinja2 renders, or refused where jinja2
// refuses (with the template's own message where it raised one).
TEST(Jinja, ChatTemplateFixturesMatchJinja2) {
  const std::string dir = test::source_dir() + "/tests/fixtures/chat_templates/";
  const json fixture = json::parse(read_file(dir + "expected.json"));
  std::map<std::string, ChatTemplate> templates;
  int rendered = 0, refused = 0;
  for (const json& c : fixture.at("cases")) {
    const std::string name = c.at("template").get<std::string>();
    const std::string conv_name = c.at("conversation").get<std::string>();
    const bool gen = c.at("add_generation_prompt").get<bool>();
    SCOPED_TRACE(name + " / " + conv_name + (gen ? " / generation prompt" : ""));
    if (!templates.count(name)) {
      ChatTemplate t = ChatTemplate::from_source(read_file(dir + name), name);
      const json& tokens = fixture.at("special_tokens").at(name);
      t.set_special_tokens(tokens.at("bos_token").get<std::string>(),
                           tokens.at("eos_token").get<std::string>());
      templates.emplace(name, std::move(t));
    }
    const json& conv = fixture.at("conversations").at(conv_name);
    const ChatOptions options{conv.value("tools", json()), fixture.at("kwargs")};
    const std::vector<ChatMessage> messages = messages_of(conv);
    if (c.contains("expected")) {
      try {
        EXPECT_EQ(templates.at(name).apply(messages, gen, options),
                  c.at("expected").get<std::string>());
        ++rendered;
      } catch (const Error& e) {
        ADD_FAILURE() << e.what();
      }
      continue;
    }
    const std::string jinja2_error = c.at("error").get<std::string>();
    try {
      templates.at(name).apply(messages, gen, options);
      ADD_FAILURE() << "rendered, but jinja2 refused: " << jinja2_error;
    } catch (const Error& e) {
      const std::string raised = "TemplateError: ";
      if (jinja2_error.starts_with(raised)) {
        EXPECT_EQ(std::string(e.what()), "the chat template refused the conversation: " +
                                             jinja2_error.substr(raised.size()));
      }
      ++refused;
    }
  }
  EXPECT_EQ(templates.size(), 8u);
  EXPECT_GE(rendered, 100);
  std::printf(
      "chat template fixtures: %zu templates, %d cases rendered identically, %d refused "
      "as jinja2 refuses\n",
      templates.size(), rendered, refused);
}

}  // namespace
}  // namespace lserve
