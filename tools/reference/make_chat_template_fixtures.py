#!/usr/bin/env python3
"""Builds tests/fixtures/chat_templates/cases.json: chat templates and transformers' renderings of them.

The templates below are written for shoal's tests in the style of the model families shoal serves
(Qwen2.5/Qwen3 ChatML with tools and <think>, Llama-3.x with tools, Llama 4, Mistral/Mixtral [INST], DeepSeek-V3,
Gemma, plain ChatML) plus one that exercises the rest of the Jinja subset. They are not copies of the
models' templates. Each is rendered with transformers' own render_jinja_template (the environment
apply_chat_template uses: sandboxed, trim_blocks, lstrip_blocks, loopcontrols, raise_exception,
strftime_now, json.dumps-based tojson) over several conversations; a case that raises records the
exception's message instead of the output.

Usage:  /tmp/refenv/bin/python tools/reference/make_chat_template_fixtures.py
"""
import json
import os

import jinja2
import transformers
from transformers.utils.chat_template_utils import render_jinja_template

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "..", "tests", "fixtures", "chat_templates")

with open(os.path.join(OUT, "qwen-style.jinja")) as f:
    QWEN = f.read()

QWEN3_THINK = r"""{%- set ns = namespace(last_user=-1, sys='') -%}
{%- for m in messages -%}
  {%- if m['role'] == 'user' %}{% set ns.last_user = loop.index0 %}{% endif -%}
{%- endfor -%}
{%- if messages[0]['role'] == 'system' -%}
  {%- set ns.sys = messages[0]['content'] -%}
  {%- set loop_messages = messages[1:] -%}
  {%- set offset = 1 -%}
{%- else -%}
  {%- set loop_messages = messages -%}
  {%- set offset = 0 -%}
{%- endif -%}
{%- if ns.sys or tools -%}
<|im_start|>system
{{ ns.sys }}
{%- if tools %}

# Tools
{% for t in tools %}
{{ t | tojson(indent=2) }}
{% endfor %}
{%- endif %}<|im_end|>
{% endif -%}
{%- for m in loop_messages -%}
  {%- set idx = loop.index0 + offset -%}
  {%- if m.role == 'assistant' -%}
    {%- set c = m.content if m.content is not none else '' -%}
    {%- if m.reasoning_content is defined and m.reasoning_content -%}
      {%- set think = m.reasoning_content -%}
    {%- elif '</think>' in c -%}
      {%- set parts = c.split('</think>', 1) -%}
      {%- set think = parts[0].replace('<think>', '').strip() -%}
      {%- set c = parts[1].lstrip() -%}
    {%- else -%}
      {%- set think = '' -%}
    {%- endif %}
<|im_start|>assistant
{% if idx > ns.last_user and think -%}
<think>
{{ think }}
</think>

{% endif -%}
{{ c }}
{%- for tc in m.tool_calls | default([]) %}
<tool_call>
{{ {'name': tc.function.name, 'arguments': tc.function.arguments} | tojson }}
</tool_call>
{%- endfor %}<|im_end|>
  {%- else %}
<|im_start|>{{ 'user' if m.role == 'tool' else m.role }}
{% if m.role == 'tool' %}<tool_response>
{{ m.content }}
</tool_response>{% else %}{{ m.content }}{% endif %}<|im_end|>
  {%- endif -%}
{%- endfor %}
{% if add_generation_prompt -%}
<|im_start|>assistant
{% if not (enable_thinking | default(true)) %}<think>

</think>

{% endif -%}
{%- endif -%}"""

LLAMA3 = r"""{{- bos_token }}
{%- if custom_tools is defined %}
    {%- set tools = custom_tools %}
{%- endif %}
{%- if not tools_in_user_message is defined %}
    {%- set tools_in_user_message = true %}
{%- endif %}
{%- if not date_string is defined %}
    {%- set date_string = "26 Jul 2024" %}
{%- endif %}
{%- if not tools is defined %}
    {%- set tools = none %}
{%- endif %}

{#- Pull the system message out of the list, if there is one #}
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content']|trim %}
    {%- set messages = messages[1:] %}
{%- else %}
    {%- set system_message = "" %}
{%- endif %}

{{- "<|start_header_id|>system<|end_header_id|>\n\n" }}
{%- if tools is not none %}
    {{- "Environment: ipython\n" }}
{%- endif %}
{{- "Cutting Knowledge Date: December 2023\n" }}
{{- "Today Date: " + date_string + "\n\n" }}
{%- if tools is not none and not tools_in_user_message %}
    {{- "You have access to the following functions.\n\n" }}
    {%- for t in tools %}
        {{- t | tojson(indent=4) }}
        {{- "\n\n" }}
    {%- endfor %}
{%- endif %}
{{- system_message }}
{{- "<|eot_id|>" }}

{%- if tools_in_user_message and not tools is none %}
    {%- if messages | length != 0 %}
        {%- set first_user_message = messages[0]['content']|trim %}
        {%- set messages = messages[1:] %}
    {%- else %}
        {{- raise_exception("Cannot put tools in the first user message when there's no first user message!") }}
    {%- endif %}
    {{- '<|start_header_id|>user<|end_header_id|>\n\n' -}}
    {{- "Given the following functions, please respond with a JSON for a function call " }}
    {{- "with its proper arguments that best answers the given prompt.\n\n" }}
    {{- 'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.' }}
    {{- "Do not use variables.\n\n" }}
    {%- for t in tools %}
        {{- t | tojson(indent=4) }}
        {{- "\n\n" }}
    {%- endfor %}
    {{- first_user_message + "<|eot_id|>"}}
{%- endif %}

{%- for message in messages %}
    {%- if not (message.role == 'ipython' or message.role == 'tool' or 'tool_calls' in message) %}
        {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' }}
    {%- elif 'tool_calls' in message %}
        {%- if not message.tool_calls|length == 1 %}
            {{- raise_exception("This model only supports single tool-calls at once!") }}
        {%- endif %}
        {%- set tool_call = message.tool_calls[0].function %}
        {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' -}}
        {{- '{"name": "' + tool_call.name + '", ' }}
        {{- '"parameters": ' }}
        {{- tool_call.arguments | tojson }}
        {{- "}" }}
        {{- "<|eot_id|>" }}
    {%- elif message.role == "tool" or message.role == "ipython" %}
        {{- "<|start_header_id|>ipython<|end_header_id|>\n\n" }}
        {%- if message.content is mapping or message.content is iterable %}
            {{- message.content | tojson }}
        {%- else %}
            {{- message.content }}
        {%- endif %}
        {{- "<|eot_id|>" }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}
{%- endif %}
"""

MISTRAL = r"""{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content'] %}
    {%- set loop_messages = messages[1:] %}
{%- else %}
    {%- set loop_messages = messages %}
{%- endif %}
{%- set user_messages = loop_messages | selectattr("role", "equalto", "user") | list %}

{{- bos_token }}
{%- for message in loop_messages %}
    {%- if message['role'] in ['user', 'assistant'] %}
        {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}
            {{- raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}
        {%- endif %}
    {%- endif %}
    {%- if message['role'] == 'user' %}
        {%- if tools is not none and (message == user_messages[-1]) %}
            {{- "[AVAILABLE_TOOLS] [" }}
            {%- for tool in tools %}
                {%- set tool = tool.function %}
                {{- '{"type": "function", "function": {' }}
                {%- for key, val in tool.items() if key != "return" %}
                    {%- if val is string %}
                        {{- '"' + key + '": "' + val + '"' }}
                    {%- else %}
                        {{- '"' + key + '": ' + val|tojson }}
                    {%- endif %}
                    {%- if not loop.last %}
                        {{- ", " }}
                    {%- endif %}
                {%- endfor %}
                {{- "}}" }}
                {%- if not loop.last %}
                    {{- ", " }}
                {%- else %}
                    {{- "]" }}
                {%- endif %}
            {%- endfor %}
            {{- "[/AVAILABLE_TOOLS]" }}
        {%- endif %}
        {%- if loop.first and system_message is defined %}
            {{- ' [INST] ' + system_message + '\n\n' + message['content'] + ' [/INST]' }}
        {%- else %}
            {{- ' [INST] ' + message['content'] + ' [/INST]' }}
        {%- endif %}
    {%- elif message.tool_calls is defined and message.tool_calls is not none %}
        {{- "[TOOL_CALLS] [" }}
        {%- for tool_call in message.tool_calls %}
            {%- set out = tool_call.function|tojson %}
            {{- out[:-1] }}
            {%- if not tool_call.id is defined or tool_call.id|length != 9 %}
                {{- raise_exception("Tool call IDs should be alphanumeric strings with length 9!") }}
            {%- endif %}
            {{- ', "id": "' + tool_call.id + '"}' }}
            {%- if not loop.last %}
                {{- ", " }}
            {%- else %}
                {{- "]" + eos_token }}
            {%- endif %}
        {%- endfor %}
    {%- elif message['role'] == 'assistant' %}
        {{- ' ' + message['content']|trim + eos_token}}
    {%- elif message['role'] == 'tool' %}
        {%- if message.content is defined and message.content.content is defined %}
            {%- set content = message.content.content %}
        {%- else %}
            {%- set content = message.content %}
        {%- endif %}
        {{- '[TOOL_RESULTS] {"content": ' + content|string + ", " }}
        {{- '"call_id": "' + message.tool_call_id + '"}[/TOOL_RESULTS]' }}
    {%- else %}
        {{- raise_exception('Only user and assistant roles are supported, with the exception of an initial optional system message!') }}
    {%- endif %}
{%- endfor %}
"""

DEEPSEEK = r"""{% if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}{% endif %}{% set ns = namespace(is_first=false, is_tool=false, is_output_first=true, system_prompt='', is_first_sp=true) %}{%- for message in messages %}{%- if message['role'] == 'system' %}{%- if ns.is_first_sp %}{% set ns.system_prompt = ns.system_prompt + message['content'] %}{% set ns.is_first_sp = false %}{%- else %}{% set ns.system_prompt = ns.system_prompt + '\n\n' + message['content'] %}{%- endif %}{%- endif %}{%- endfor %}{{ bos_token }}{{ ns.system_prompt }}{%- for message in messages %}{%- if message['role'] == 'user' %}{%- set ns.is_tool = false -%}{{'<｜User｜>' + message['content']}}{%- endif %}{%- if message['role'] == 'assistant' and 'tool_calls' in message %}{%- set ns.is_tool = false -%}{%- for tool in message['tool_calls'] %}{%- if not ns.is_first %}{%- if message['content'] is none %}{{'<｜Assistant｜><｜tool▁calls▁begin｜><｜tool▁call▁begin｜>' + tool['type'] + '<｜tool▁sep｜>' + tool['function']['name'] + '\n' + '```json' + '\n' + tool['function']['arguments']|tojson + '\n' + '```' + '<｜tool▁call▁end｜>'}}{%- else %}{{'<｜Assistant｜>' + message['content'] + '<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>' + tool['type'] + '<｜tool▁sep｜>' + tool['function']['name'] + '\n' + '```json' + '\n' + tool['function']['arguments']|tojson + '\n' + '```' + '<｜tool▁call▁end｜>'}}{%- endif %}{%- set ns.is_first = true -%}{%- else %}{{'\n' + '<｜tool▁call▁begin｜>' + tool['type'] + '<｜tool▁sep｜>' + tool['function']['name'] + '\n' + '```json' + '\n' + tool['function']['arguments']|tojson + '\n' + '```' + '<｜tool▁call▁end｜>'}}{%- endif %}{%- endfor %}{{'<｜tool▁calls▁end｜><｜end▁of▁sentence｜>'}}{%- endif %}{%- if message['role'] == 'assistant' and 'tool_calls' not in message %}{%- if ns.is_tool %}{{'<｜tool▁outputs▁end｜>' + message['content'] + '<｜end▁of▁sentence｜>'}}{%- set ns.is_tool = false -%}{%- else %}{% set content = message['content'] %}{% if '</think>' in content %}{% set content = content.split('</think>')[-1] %}{% endif %}{{'<｜Assistant｜>' + content + '<｜end▁of▁sentence｜>'}}{%- endif %}{%- endif %}{%- if message['role'] == 'tool' %}{%- set ns.is_tool = true -%}{%- if ns.is_output_first %}{{'<｜tool▁outputs▁begin｜><｜tool▁output▁begin｜>' + message['content'] + '<｜tool▁output▁end｜>'}}{%- set ns.is_output_first = false %}{%- else %}{{'<｜tool▁output▁begin｜>' + message['content'] + '<｜tool▁output▁end｜>'}}{%- endif %}{%- endif %}{%- endfor -%}{% if ns.is_tool %}{{'<｜tool▁outputs▁end｜>'}}{% endif %}{% if add_generation_prompt and not ns.is_tool %}{{'<｜Assistant｜>'}}{% endif %}"""

GEMMA = r"""{{ bos_token }}
{%- if messages[0]['role'] == 'system' -%}
    {%- if messages[0]['content'] is string -%}
        {%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}
    {%- else -%}
        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\n\n' -%}
    {%- endif -%}
    {%- set loop_messages = messages[1:] -%}
{%- else -%}
    {%- set first_user_prefix = "" -%}
    {%- set loop_messages = messages -%}
{%- endif -%}
{%- for message in loop_messages -%}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
        {{ raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}
    {%- endif -%}
    {%- if (message['role'] == 'assistant') -%}
        {%- set role = "model" -%}
    {%- else -%}
        {%- set role = message['role'] -%}
    {%- endif -%}
    {{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else "") }}
    {%- if message['content'] is string -%}
        {{ message['content'] | trim }}
    {%- elif message['content'] is iterable -%}
        {%- for item in message['content'] -%}
            {%- if item['type'] == 'image' -%}
                {{ '<start_of_image>' }}
            {%- elif item['type'] == 'text' -%}
                {{ item['text'] | trim }}
            {%- endif -%}
        {%- endfor -%}
    {%- else -%}
        {{ raise_exception("Invalid content type") }}
    {%- endif -%}
    {{ '<end_of_turn>\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{'<start_of_turn>model\n'}}
{%- endif -%}
"""

CHATML = r"""{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"""

# Everything else the interpreter claims: macros, block set, filter blocks, raw, comments, whitespace
# control in all its forms, loop variables, tests, filters, string/dict methods, printing of values.
FEATURES = r"""{# header comment #}
{% macro render(m, prefix='> ', upper=false) -%}
{{ prefix }}{{ m.role | upper if upper else m.role }}: {{ m.content if m.content is string else m.content | map(attribute='text') | join(' ') }}
{%- endmacro %}
{% set header %}
  {{- "== " ~ messages | length ~ " messages ==" }}
{% endset %}
{{ header }}
{% for m in messages %}
    {{ loop.index }}/{{ loop.length }} {{ loop.revindex0 }} {{ loop.cycle('odd', 'even') }}{% if loop.first %} first{% endif %}{% if loop.last %} last{% endif %}
    {{ render(m, upper=loop.index is even) }}
    {%- if loop.previtem is defined %} prev={{ loop.previtem.role }}{% endif %}
    {%- if loop.nextitem is defined %} next={{ loop.nextitem.role }}{% endif %}

{% endfor %}
{%- for m in messages if m.role == 'user' -%}
u{{ loop.index }}:{{ m.content is string }};
{%- else -%}
no users
{%- endfor %}

{% filter upper %}shouted {{ messages[0].role }}{% endfilter %}
{% raw %}{{ not rendered }} {% if %}{% endraw %}
roles={{ messages | map(attribute='role') | unique | list }}
sorted={{ messages | map(attribute='role') | sort(reverse=true) | join(',') }}
{%- set d = {'b': 2, 'a': 1, 'c': [1, 2.5, none, true, 'x\'y']} %}
dict={{ d }} items={% for k, v in d.items() %}{{ k }}={{ v }}{{ ', ' if not loop.last }}{% endfor %}
keys={{ d.keys() | list }} get={{ d.get('z', 'dflt') }} json={{ d | tojson }} sorted={{ d | dictsort }}
{%- set s = '  Hello, World! ' %}
str=[{{ s.strip() }}|{{ s.lstrip() }}|{{ s.rstrip() }}|{{ s.strip(' !') }}|{{ s.lower() }}|{{ s.upper() }}|{{ s.split(',') }}|{{ s.split() }}|{{ s.replace('l', 'L') }}|{{ s.find('World') }}|{{ s.startswith(('  H', 'x')) }}|{{ s.endswith('! ') }}|{{ s | trim | title }}|{{ s[2:7] }}|{{ s[::-1] }}|{{ s | length }}|{{ s | wordcount }}]
num=[{{ 7 // 2 }} {{ -7 // 2 }} {{ 7 % 3 }} {{ -7 % 3 }} {{ 7 / 2 }} {{ 2 ** 8 }} {{ 1e3 }} {{ 0.1 + 0.2 }} {{ 3.0 }} {{ 1.5e-7 }} {{ 10 / 4 * 2 }} {{ (1 + 2) * 3 }} {{ -3 | abs }} {{ 2.675 | round(2) }} {{ '42' | int + 1 }} {{ '4.5' | float }} {{ 5 | string ~ 'x' }}]
tests=[{{ none is none }} {{ 1 is number }} {{ 1 is integer }} {{ 1.0 is float }} {{ 'a' is string }} {{ d is mapping }} {{ [] is sequence }} {{ 3 is odd }} {{ 4 is even }} {{ 9 is divisibleby 3 }} {{ true is boolean }} {{ undefined_thing is defined }} {{ undefined_thing is undefined }} {{ 1 is not string }}]
ops=[{{ 'a' in 'abc' }} {{ 'z' not in ['a'] }} {{ 'b' in d }} {{ 1 < 2 < 3 }} {{ not true or false }} {{ [1, 2] + [3] }} {{ 'ab' * 3 }} {{ 1 if false }}|{{ none or 'fallback' }} {{ 0 and 1 }} {{ (1, 'two') }} {{ [1, 2][-1] }} {{ [] | first is undefined }}]
filters=[{{ messages | selectattr('role', 'equalto', 'user') | list | length }} {{ messages | rejectattr('role', 'equalto', 'user') | map(attribute='role') | list }} {{ [3, 1, 2] | sort | first }} {{ [3, 1, 2] | max }} {{ [3, 1, 2] | min }} {{ [3, 1, 2] | sum }} {{ [3, 1, 2] | reverse | list }} {{ 'a\nb' | indent(2, first=true) }} {{ '<a href="x">&</a>' | escape }} {{ undefined_thing | default('dflt') }} {{ '' | default('empty', true) }} {{ {'x': 1} | items | list }} {{ ['b', 'a'] | join }} {{ 'ab' | list }} {{ 'hello' | capitalize }} {{ [none, 0, 'x', ''] | select | list }} {{ [1, 2, 3, 4] | reject('odd') | list }}]
json=[{{ 'é "q" / \\ \t' | tojson }} {{ [] | tojson }} {{ {} | tojson(indent=2) }} {{ {'a': {'b': [1, {'c': none}]}} | tojson(indent=2) }} {{ 'é' | tojson(ensure_ascii=true) }} {{ 1.0 | tojson }} {{ [true, none] | tojson(separators=(',', ':')) }}]
{%- set ns = namespace(total=0, names=[]) %}
{%- for i in range(10) %}{% if i == 7 %}{% break %}{% endif %}{% if i is odd %}{% continue %}{% endif %}{% set ns.total = ns.total + i %}{% set ns.names = ns.names + [i | string] %}{% endfor %}
loopctl={{ ns.total }} {{ ns.names | join('+') }}
{%- set a, b = 1, 'two' %}
unpack={{ a }} {{ b }}
  {%+ if true %}kept-indent{% endif %}
    {%- if true %} stripped-left{% endif -%}
    {% if true %}
lstripped
    {% endif %}
{{ "last line" -}}
   
"""

LLAMA4 = r"""{#- A chat template in the Llama 4 format, written for shoal's tests: <|header_start|>role<|header_end|>
    headers, <|eot|> after each turn, content as a string or a list of text/image parts, tools offered
    in the system turn, tool calls as JSON and tool results in ipython turns. -#}
{{- bos_token }}
{%- macro text(content) -%}
    {%- if content is string -%}
        {{- content }}
    {%- else -%}
        {%- for part in content -%}
            {%- if part['type'] == 'text' -%}{{- part['text'] }}{%- elif part['type'] == 'image' -%}{{- '<|image|>' }}{%- endif -%}
        {%- endfor -%}
    {%- endif -%}
{%- endmacro -%}
{%- if messages[0]['role'] == 'system' %}
    {%- set system = text(messages[0]['content']) | trim %}
    {%- set messages = messages[1:] %}
{%- else %}
    {%- set system = none %}
{%- endif %}
{%- if system is not none or tools %}
    {{- '<|header_start|>system<|header_end|>\n\n' }}
    {%- if system is not none %}{{- system }}{%- endif %}
    {%- if tools %}
        {{- '\n\nTo call a function, answer with one JSON object {"name": ..., "parameters": {...}}. Functions:' }}
        {%- for t in tools %}
            {{- '\n' + (t | tojson(indent=2)) }}
        {%- endfor %}
    {%- endif %}
    {{- '<|eot|>' }}
{%- endif %}
{%- for m in messages %}
    {%- if m['role'] == 'tool' or m['role'] == 'ipython' %}
        {{- '<|header_start|>ipython<|header_end|>\n\n' + (text(m['content']) | trim) + '<|eot|>' }}
    {%- elif m['role'] == 'user' or m['role'] == 'assistant' %}
        {{- '<|header_start|>' + m['role'] + '<|header_end|>\n\n' }}
        {%- if m['content'] %}{{- text(m['content']) | trim }}{%- endif %}
        {%- if m['tool_calls'] is defined and m['tool_calls'] %}
            {%- for call in m['tool_calls'] %}
                {{- '{"name": "' + call['function']['name'] + '", "parameters": ' + (call['function']['arguments'] | tojson) + '}' }}
            {%- endfor %}
        {%- endif %}
        {{- '<|eot|>' }}
    {%- else %}
        {{- raise_exception('Unknown role: ' + m['role']) }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|header_start|>assistant<|header_end|>\n\n' }}
{%- endif %}
"""

TEMPLATES = {
    "qwen-style": QWEN,
    "qwen3-think": QWEN3_THINK,
    "llama3-style": LLAMA3,
    "llama4-style": LLAMA4,
    "mistral-style": MISTRAL,
    "deepseek-style": DEEPSEEK,
    "gemma-style": GEMMA,
    "chatml": CHATML,
    "features": FEATURES,
}

TOOLS = [
    {"type": "function", "function": {
        "name": "get_weather", "description": "Get the weather for a city (°C).",
        "parameters": {"type": "object", "properties": {
            "city": {"type": "string", "description": "City name, e.g. \"Zürich\""},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
            "required": ["city"]},
        "return": {"type": "number"}}},
    {"type": "function", "function": {
        "name": "search", "description": "Search the web / the intranet",
        "parameters": {"type": "object", "properties": {"q": {"type": "string"}, "k": {"type": "integer", "default": 3}}}}},
]

SYSTEM = {"role": "system", "content": "You are a helpful assistant.\nAnswer briefly."}
BASIC = [SYSTEM,
         {"role": "user", "content": "Hello! What's 2+2?"},
         {"role": "assistant", "content": "  2 + 2 = 4.\n"},
         {"role": "user", "content": "And 3 × 3?"}]
NO_SYSTEM = [{"role": "user", "content": "Just one question."}]
UNICODE = [{"role": "user", "content": "Ünïcödé ✓ — emoji 🙂🚀, CJK 你好世界, RTL שלום, quotes \"' and \\ backslash\ttab"},
           {"role": "assistant", "content": "Noted: 🙂 {{ not a template }} {% neither %}"},
           {"role": "user", "content": "line1\nline2\n\n  indented\n"}]
MULTI = [{"role": "system", "content": "sys"}] + [
    {"role": "user" if i % 2 == 0 else "assistant", "content": f"turn {i}"} for i in range(8)]
TOOL_CALL = [
    {"role": "system", "content": "Use tools when useful."},
    {"role": "user", "content": "Weather in Zürich?"},
    {"role": "assistant", "content": None if False else "", "tool_calls": [
        {"id": "call12345", "type": "function",
         "function": {"name": "get_weather", "arguments": {"city": "Zürich", "unit": "celsius"}}}]},
    {"role": "tool", "tool_call_id": "call12345", "content": "{\"temp\": 21.5, \"sky\": \"☀\"}"},
    {"role": "assistant", "content": "It is 21.5 °C and sunny."},
    {"role": "user", "content": "Thanks!"}]
PARTS = [{"role": "user", "content": [{"type": "text", "text": "Describe "}, {"type": "image"},
                                      {"type": "text", "text": "this picture."}]}]
REASONING = [
    {"role": "user", "content": "Is 91 prime?"},
    {"role": "assistant", "content": "<think>\n91 = 7 × 13.\n</think>\n\nNo, 91 = 7 × 13."},
    {"role": "user", "content": "And 97?"},
    {"role": "assistant", "reasoning_content": "Check primes up to 9: none divide 97.", "content": "Yes, 97 is prime."}]
BAD_ALTERNATION = [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]
UNKNOWN_ROLE = [{"role": "narrator", "content": "Once upon a time"}]

BOS, EOS = "<s>", "</s>"


def case(name, template, messages, gen=True, tools=None, extra=None, bos=BOS, eos=EOS):
    return dict(name=name, template=template, messages=messages, add_generation_prompt=gen, tools=tools,
                bos_token=bos, eos_token=eos, extra=extra or {})


CASES = [
    case("qwen/basic", "qwen-style", BASIC),
    case("qwen/no_system_no_gen", "qwen-style", NO_SYSTEM, gen=False),
    case("qwen/unicode", "qwen-style", UNICODE),
    case("qwen/multi", "qwen-style", MULTI, gen=False),
    case("qwen/tools", "qwen-style", TOOL_CALL, tools=TOOLS),
    case("qwen/tools_no_system", "qwen-style", NO_SYSTEM, tools=TOOLS),
    case("qwen/parts", "qwen-style", PARTS),
    case("qwen/reasoning", "qwen-style", REASONING, gen=False),
    case("qwen/no_thinking", "qwen-style", BASIC, extra={"enable_thinking": False}),
    case("qwen/unknown_role", "qwen-style", UNKNOWN_ROLE),
    case("qwen3/basic", "qwen3-think", BASIC),
    case("qwen3/reasoning", "qwen3-think", REASONING),
    case("qwen3/tools", "qwen3-think", TOOL_CALL, tools=TOOLS, extra={"enable_thinking": False}),
    case("qwen3/unicode_no_gen", "qwen3-think", UNICODE, gen=False),
    case("llama3/basic", "llama3-style", BASIC),
    case("llama3/no_system", "llama3-style", NO_SYSTEM, gen=False),
    case("llama3/tools", "llama3-style", TOOL_CALL, tools=TOOLS),
    case("llama3/tools_system_prompt", "llama3-style", BASIC, tools=TOOLS,
         extra={"tools_in_user_message": False, "date_string": "01 Jan 2025"}),
    case("llama3/unicode", "llama3-style", UNICODE),
    case("llama4/basic", "llama4-style", BASIC, bos="<|begin_of_text|>"),
    case("llama4/no_system", "llama4-style", NO_SYSTEM, gen=False, bos="<|begin_of_text|>"),
    case("llama4/tools", "llama4-style", TOOL_CALL, tools=TOOLS, bos="<|begin_of_text|>"),
    case("llama4/parts", "llama4-style", PARTS, bos="<|begin_of_text|>"),
    case("llama4/unicode", "llama4-style", UNICODE, bos="<|begin_of_text|>"),
    case("llama4/unknown_role", "llama4-style", UNKNOWN_ROLE, bos="<|begin_of_text|>"),
    case("mistral/basic", "mistral-style", BASIC),
    case("mistral/no_system", "mistral-style", NO_SYSTEM),
    case("mistral/multi", "mistral-style", MULTI),
    case("mistral/tools", "mistral-style", TOOL_CALL, tools=TOOLS),
    case("mistral/unicode", "mistral-style", UNICODE),
    case("mistral/bad_alternation", "mistral-style", BAD_ALTERNATION),
    case("deepseek/basic", "deepseek-style", BASIC, bos="<｜begin▁of▁sentence｜>"),
    case("deepseek/tools", "deepseek-style", TOOL_CALL, bos="<｜begin▁of▁sentence｜>"),
    case("deepseek/reasoning_no_gen", "deepseek-style", REASONING[:2], gen=False, bos="<｜begin▁of▁sentence｜>"),
    case("deepseek/unicode", "deepseek-style", UNICODE, bos="<｜begin▁of▁sentence｜>"),
    case("gemma/basic", "gemma-style", BASIC, bos="<bos>"),
    case("gemma/parts", "gemma-style", PARTS, bos="<bos>"),
    case("gemma/unicode_no_gen", "gemma-style", UNICODE, gen=False, bos="<bos>"),
    case("gemma/bad_alternation", "gemma-style", BAD_ALTERNATION, bos="<bos>"),
    case("chatml/basic", "chatml", BASIC),
    case("chatml/unicode_no_gen", "chatml", UNICODE, gen=False),
    case("features/basic", "features", BASIC),
    case("features/parts", "features", PARTS),
    case("features/multi", "features", MULTI),
]


def render(c):
    kwargs = dict(c["extra"])
    if c["bos_token"]:
        kwargs["bos_token"] = c["bos_token"]
    if c["eos_token"]:
        kwargs["eos_token"] = c["eos_token"]
    try:
        out, _ = render_jinja_template(conversations=[c["messages"]], tools=c["tools"],
                                       chat_template=TEMPLATES[c["template"]],
                                       add_generation_prompt=c["add_generation_prompt"], **kwargs)
        return out[0], None
    except Exception as e:  # noqa: BLE001 - the message is the expected result
        return None, str(e)


def main():
    cases = []
    for c in CASES:
        expected, error = render(c)
        cases.append(dict(c, expected=expected, error=error))
        print(f"{c['name']:32s} {'error: ' + error if error else str(len(expected)) + ' chars'}")
    doc = {
        "generator": "tools/reference/make_chat_template_fixtures.py",
        "versions": {"transformers": transformers.__version__, "jinja2": jinja2.__version__},
        "templates": TEMPLATES,
        "cases": cases,
    }
    with open(os.path.join(OUT, "cases.json"), "w", encoding="utf-8") as f:
        json.dump(doc, f, ensure_ascii=False, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
