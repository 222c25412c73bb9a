// The Jinja interpreter against transformers: every case in tests/fixtures/chat_templates/cases.json
// (rendered by tools/reference/make_chat_template_fixtures.py with transformers' own renderer) must come
// out byte-identical, or fail with the message jinja2 raised. Then unit cases for the expression,
// filter and whitespace semantics, and for errors and limits on hostile templates.
#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <sstream>

#include "model/chat_template.h"
#include "model/jinja/template.h"
#include "tests/unit/test_files.h"

namespace shoal {
namespace {

using json = nlohmann::ordered_json;
using ::shoal::testing::MessageHas;

std::string FixturesDir() { return std::string(SHOAL_SOURCE_DIR) + "/tests/fixtures"; }

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

json LoadCases() {
  return json::parse(ReadFile(FixturesDir() + "/chat_templates/cases.json"));
}

TEST(ChatTemplateFixtures, EveryCaseMatchesTransformers) {
  const json doc = LoadCases();
  std::map<std::string, std::shared_ptr<const jinja::Template>> templates;
  for (auto it = doc["templates"].begin(); it != doc["templates"].end(); ++it) {
    auto t = jinja::Template::Parse(it.value().get<std::string>(), it.key());
    ASSERT_TRUE(t.ok()) << t.status().ToString();
    templates[it.key()] = *t;
  }
  int cases = 0, passed = 0;
  for (const auto& c : doc["cases"]) {
    SCOPED_TRACE(c["name"].get<std::string>());
    ++cases;
    ChatTemplateOptions o;
    o.add_generation_prompt = c["add_generation_prompt"].get<bool>();
    o.bos_token = c["bos_token"].get<std::string>();
    o.eos_token = c["eos_token"].get<std::string>();
    o.tools = c["tools"];
    o.extra = c["extra"];
    auto out = RenderChatTemplate(*templates.at(c["template"].get<std::string>()), c["messages"], o);
    if (c["error"].is_null()) {
      ASSERT_TRUE(out.ok()) << out.status().ToString();
      EXPECT_EQ(*out, c["expected"].get<std::string>());
      passed += *out == c["expected"].get<std::string>();
    } else {
      ASSERT_FALSE(out.ok()) << *out;
      EXPECT_TRUE(MessageHas(out.status(), c["error"].get<std::string>()));
      passed += out.status().message().find(c["error"].get<std::string>()) != std::string::npos;
    }
  }
  EXPECT_GE(cases, 30);
  std::printf("chat template fixtures: %d/%d cases match transformers\n", passed, cases);
}

TEST(ChatTemplateFixtures, QwenStyleFileIsTheFixtureTemplate) {
  const json doc = LoadCases();
  EXPECT_EQ(ReadFile(FixturesDir() + "/chat_templates/qwen-style.jinja"),
            doc["templates"]["qwen-style"].get<std::string>());
}

StatusOr<std::string> Render(const std::string& src, const json& ctx = json::object()) {
  auto t = jinja::Template::Parse(src, "t.jinja");
  if (!t.ok()) return t.status();
  return (*t)->Render(ctx);
}

std::string R(const std::string& src, const json& ctx = json::object()) {
  auto r = Render(src, ctx);
  return r.ok() ? *r : "ERROR " + r.status().message();
}

// Expected strings below were produced by jinja2 in transformers' environment.
TEST(Jinja, PrintsValuesLikePython) {
  EXPECT_EQ(R("{{ [1,'a',none,true,1.5,{'k':'v'}] }}|{{ (1,2) }}|{{ 1e20 }}|{{ 0.1+0.2 }}|{{ 10/2 }}"),
            "[1, 'a', None, True, 1.5, {'k': 'v'}]|(1, 2)|1e+20|0.30000000000000004|5.0");
  EXPECT_EQ(R("{{ 1.0 }}{{ 1e16 }}{{ 1e-5 }}{{ 123456789.123 }}{{ 1/3 }}{{ -0.0 }}"),
            "1.01e+161e-05123456789.1230.3333333333333333-0.0");
  EXPECT_EQ(R("{{ ['it\\'s', 'a\"b', 'x\\ny', 'é'] }}"), "[\"it's\", 'a\"b', 'x\\ny', 'é']");
  EXPECT_EQ(R("{{ x }}|{{ none }}|{{ true }}|{{ 'abc' ~ none ~ 1 }}"), "|None|True|abcNone1");
  EXPECT_EQ(R("{% macro f(a, b='x') %}[{{ a }}{{ b }}]{% endmacro %}{{ f(1) }}{{ f(1, b=2) }}{{ f }}"),
            "[1x][12]<Macro 'f'>");
}

TEST(Jinja, Arithmetic) {
  EXPECT_EQ(R("{{ -7//2 }} {{ -7%3 }} {{ 2**10 }} {{ 7 / 2 }} {{ 'ab' * 2 }} {{ [1] + [2] }}"),
            "-4 2 1024 3.5 abab [1, 2]");
  EXPECT_EQ(R("{{ 1 == 1.0 }}{{ true == 1 }}{{ [1, 2] == [1, 2] }}{{ u == u }}{{ u == none }}"),
            "TrueTrueTrueTrueFalse");
  EXPECT_TRUE(MessageHas(Render("{{ 1 + 'a' }}").status(), "unsupported operand type(s) for +: 'int' and 'str'"));
  EXPECT_TRUE(MessageHas(Render("{{ 1/0 }}").status(), "division by zero"));
  EXPECT_TRUE(MessageHas(Render("{{ 'a' < 1 }}").status(), "'<' not supported between instances of 'str' and 'int'"));
  EXPECT_TRUE(MessageHas(Render("{{ 'a' in none }}").status(), "argument of type 'NoneType' is not iterable"));
}

TEST(Jinja, UndefinedSemantics) {
  EXPECT_EQ(R("[{{ x }}]{{ x is defined }}{{ x is undefined }}{{ x | length }}{{ x | default('d') }}"
              "{{ none | default('d') }}{{ '' | default('d', true) }}{% for i in x %}never{% endfor %}"),
            "[]FalseTrue0dNoned");
  EXPECT_EQ(R("{{ m.foo }}|{{ m['foo'] }}|{{ none.foo }}|{{ [1][5] }}", {{"m", {{"role", "r"}}}}), "|||");
  EXPECT_TRUE(MessageHas(Render("{{ x.y }}").status(), "'x' is undefined"));
  EXPECT_TRUE(MessageHas(Render("{{ m.foo.bar }}", {{"m", json::object()}}).status(),
                         "'dict object' has no attribute 'foo'"));
  EXPECT_TRUE(MessageHas(Render("{{ [1][5].a }}").status(), "list object has no element 5"));
  EXPECT_TRUE(MessageHas(Render("{{ foo() }}").status(), "'foo' is undefined"));
  EXPECT_TRUE(MessageHas(Render("{{ [1].append(2) }}").status(), "access to attribute 'append' of 'list' object is unsafe."));
}

TEST(Jinja, TestsAndFilters) {
  EXPECT_EQ(R("{{ u is iterable }}{{ true is number }}{{ true is integer }}{{ 5 is divisibleby 3 }}"
              "{{ 6 is divisibleby(3) }}{{ 'a' is not string }}"),
            "TrueTrueFalseFalseTrueFalse");
  EXPECT_EQ(R("{{ [3,1,2]|sort }}{{ ['b','A','a']|sort }}{{ ['b','A','a']|unique|list }}"),
            "[1, 2, 3]['A', 'a', 'b']['b', 'A']");
  EXPECT_EQ(R("{{ 'hello world-foo(bar'|title }}|{{ 'a\nb\n\nc'|indent(2) }}|{{ 'x'|indent(2, true) }}"),
            "Hello World-Foo(Bar|a\n  b\n\n  c|  x");
  EXPECT_EQ(R("{{ {'a': [1, 2], 'b': 'é/\"'}|tojson }}|{{ {'a': [1, {}], 'b': []}|tojson(indent=2) }}"),
            "{\"a\": [1, 2], \"b\": \"é/\\\"\"}|{\n  \"a\": [\n    1,\n    {}\n  ],\n  \"b\": []\n}");
  EXPECT_EQ(R("{{ 2.5|round }}{{ 3.5|round }}{{ 1.2345|round(2) }}{{ -3|abs }}{{ 2.675|round(2) }}"),
            "2.04.01.2332.67");
  EXPECT_EQ(R("{{ [1,2]|map('string')|join(',') }}{{ [{'a':1},{'b':2}]|selectattr('a','defined')|list }}"
              "{{ [{'a':1},{'a':2}]|map(attribute='a')|list }}"),
            "1,2[{'a': 1}][1, 2]");
  EXPECT_EQ(R("{{ 'abc'|list }}{{ {'a':1,'b':2}|list }}{{ 'abc'|first }}{{ 'abc'|last }}{{ [1,2]|reverse|list }}"
              "{{ 'abc'|reverse }}"),
            "['a', 'b', 'c']['a', 'b']ac[2, 1]cba");
  EXPECT_EQ(R("{{ '3.7'|int }}{{ 'x'|int }}{{ '3'|float }}{{ true|int }}{{ 3|string ~ 'a' }}"), "303.013a");
  EXPECT_EQ(R("{{ {1: 'a', none: 'c'}|tojson }}{{ 'a\\u0001\\t'|tojson }}{{ 'é'|tojson(true) }}"),
            "{\"1\": \"a\", \"null\": \"c\"}\"a\\u0001\\t\"\"\\u00e9\"");
  EXPECT_TRUE(MessageHas(Render("{{ x|tojson }}").status(), "Object of type Undefined is not JSON serializable"));
}

TEST(Jinja, StringsAndSlices) {
  EXPECT_EQ(R("{{ 'a,b,,c'.split(',') }}{{ ' a  b '.split() }}{{ 'a,b,c'.split(',', 1) }}{{ 'xxhixx'.strip('x') }}"),
            "['a', 'b', '', 'c']['a', 'b']['a', 'b,c']hi");
  EXPECT_EQ(R("{{ 1 if false }}|{{ 'abc'[::-1] }}{{ 'héllo'[1:3] }}{{ [1,2,3][:-1] }}{{ 'héllo'|length }}"),
            "|cbaél[1, 2]5");
  EXPECT_EQ(R("{{ 'a\\tb' }}{{ '\\u00e9' }}{{ '\\q' }}{{ 'Hello World'.lower() }}{{ 'hEllo'.capitalize() }}"),
            "a\tbé\\qhello worldHello");
  EXPECT_EQ(R("{{ {'a':1}.keys()|list }}{{ {'a':1}.get('b', 3) }}{% for k, v in {'a': 1, 'b': 2}.items() %}{{ k }}={{ v }};{% endfor %}"),
            "['a']3a=1;b=2;");
}

TEST(Jinja, ScopingAndLoops) {
  // A set inside a loop neither leaks out nor survives into the next iteration.
  EXPECT_EQ(R("{% set count = 0 %}{% for i in range(3) %}{% set count = count + 1 %}{{ count }}{% endfor %}{{ count }}"),
            "1110");
  EXPECT_EQ(R("{% for i in range(3) %}{% if i == 0 %}{% set x = 'a' %}{% endif %}{{ x }}.{% endfor %}"), "a...");
  EXPECT_EQ(R("{% for a in [1,2,3] if a > 1 %}{{ loop.index }}/{{ loop.length }}{{ loop.first }}{{ loop.last }}"
              "{{ loop.previtem }}{% else %}none{% endfor %}"),
            "1/2TrueFalse2/2FalseTrue2");
  EXPECT_EQ(R("{% set ns = namespace(a=1) %}{% set ns.a = ns.a + 1 %}{{ ns.a }}"), "2");
  EXPECT_EQ(R("{% for i in range(9) %}{% if i > 3 %}{% break %}{% endif %}{% if i is odd %}{% continue %}{% endif %}{{ i }}{% endfor %}"),
            "02");
}

TEST(Jinja, Whitespace) {
  // trim_blocks eats the newline after a block tag; lstrip_blocks the indentation before one.
  EXPECT_EQ(R("a\n  {% if true %}\n  b\n  {% endif %}\nc\n"), "a\n  b\nc");
  EXPECT_EQ(R("a  {{- ' b ' -}}  c"), "a b c");
  EXPECT_EQ(R("  {%+ if true %}x{% endif %}"), "  x");
  EXPECT_EQ(R("x\n  {# c #}\ny"), "x\ny");
  EXPECT_EQ(R("{% raw %}{{ a }}{% endraw %}"), "{{ a }}");
  EXPECT_EQ(R("line\r\nnext\n"), "line\nnext");
  EXPECT_EQ(R("{{ 'a' }}\n{{ 'b' }}"), "a\nb");
}

TEST(Jinja, RaiseExceptionCarriesTheMessageAndLine) {
  auto r = Render("ok\n{{ raise_exception('Roles must alternate') }}");
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(MessageHas(r.status(), "t.jinja:2: raise_exception: Roles must alternate"));
}

TEST(Jinja, ParseErrorsNameTheLine) {
  auto unclosed = Render("a\n{% if x %}\nb\n");
  EXPECT_TRUE(MessageHas(unclosed.status(), "t.jinja:2: '{% if %}' is never closed"));
  EXPECT_TRUE(MessageHas(Render("\n\n{{ x | nosuchfilter }}").status(), "t.jinja:3: No filter named 'nosuchfilter'."));
  EXPECT_TRUE(MessageHas(Render("{{ x is nosuchtest }}").status(), "No test named 'nosuchtest'."));
  EXPECT_TRUE(MessageHas(Render("{% endfor %}").status(), "t.jinja:1: unexpected '{% endfor %}'"));
  EXPECT_TRUE(MessageHas(Render("{{ (1 }}").status(), "t.jinja:1:"));
  EXPECT_TRUE(MessageHas(Render("{{ 'abc }}").status(), "unterminated string"));
  EXPECT_TRUE(MessageHas(Render("{# never closed").status(), "missing end of comment tag"));
  EXPECT_TRUE(MessageHas(Render("{% include 'x' %}").status(), "not supported"));
  EXPECT_TRUE(MessageHas(Render("{% break %}").status(), "outside a for loop"));
}

TEST(Jinja, HostileTemplatesFailCleanly) {
  // Runaway recursion: a macro calling itself.
  auto rec = Render("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}\n{{ f(0) }}");
  EXPECT_EQ(rec.status().code(), StatusCode::kResourceExhausted);
  EXPECT_TRUE(MessageHas(rec.status(), "t.jinja:1: macro 'f': macro calls nested deeper than 64"));
  // Deep nesting in the parser.
  EXPECT_TRUE(MessageHas(Render("{{ " + std::string(500, '(') + "1" + std::string(500, ')') + " }}").status(),
                         "nested deeper than 64"));
  std::string ifs;
  for (int i = 0; i < 200; ++i) ifs += "{% if true %}";
  EXPECT_TRUE(MessageHas(Render(ifs).status(), "nested deeper than 64"));
  // A huge loop.
  auto huge = jinja::Template::Parse("{% for i in range(100000) %}\n{% for j in range(100000) %}{% endfor %}{% endfor %}",
                                     "t.jinja");
  ASSERT_TRUE(huge.ok());
  jinja::RenderLimits limits;  // the default, 1e6 iterations, takes a second or two at -O0
  limits.max_loop_iterations = 50000;
  auto loop = (*huge)->Render(json::object(), limits);
  EXPECT_EQ(loop.status().code(), StatusCode::kResourceExhausted);
  EXPECT_TRUE(MessageHas(loop.status(), "t.jinja:2: for: more than 50000 loop iterations"));
  EXPECT_TRUE(MessageHas(Render("{{ range(200000) | length }}").status(), "Range too big"));
  // Output and value size limits.
  auto big = Render("{% for i in range(100000) %}{{ 'x' * 100 }}{% endfor %}");
  EXPECT_TRUE(MessageHas(big.status(), "output exceeds"));
  EXPECT_TRUE(MessageHas(Render("{{ 'x' * 1000000000 }}").status(), "exceeds"));
  EXPECT_TRUE(MessageHas(Render("{% set ns = namespace(s='xxxxxxxxxxxxxxxx') %}{% for i in range(30) %}{% set ns.s = ns.s ~ ns.s %}"
                                "{% endfor %}").status(),
                         "exceeds"));
  EXPECT_TRUE(MessageHas(Render("{{ 9223372036854775807 + 1 }}").status(), "overflow"));
}

// A namespace is the one mutable value, so it can hold itself; and `set ns.x = [ns.x]` in a loop
// builds values of any depth. Each of these used to overflow the stack or run for hours.
TEST(Jinja, SelfReferenceAndDeepValuesFailCleanly) {
  // Printed as jinja2 prints it: Namespace.__repr__ is f"<Namespace {attrs!r}>", and CPython prints a
  // container met again inside itself as {...} or [...].
  const std::string self = "{% set ns = namespace(a=1) %}{% set ns.me = ns %}";
  EXPECT_EQ(R(self + "{{ ns }}"), "<Namespace {'a': 1, 'me': <Namespace {...}>}>");
  EXPECT_EQ(R(self + "{{ ns ~ '' }}|{{ [ns] | join }}|{{ ns | string | length }}"),
            "<Namespace {'a': 1, 'me': <Namespace {...}>}>|<Namespace {'a': 1, 'me': <Namespace {...}>}>|45");
  EXPECT_EQ(R("{% set ns = namespace(a=1) %}{% set ns.l = [ns, (ns,)] %}{{ ns.l }}"),
            "[<Namespace {'a': 1, 'l': [...]}>, (<Namespace {'a': 1, 'l': [...]}>,)]");
  EXPECT_EQ(R(self + "{{ ns == ns }}{{ ns.me == ns }}{{ [ns] == [ns.me] }}{{ ns != namespace() }}{{ ns in [ns] }}"),
            "TrueTrueTrueTrueTrue");
  EXPECT_TRUE(MessageHas(Render(self + "{{ [1].index(ns) }}").status(),
                         "<Namespace {'a': 1, 'me': <Namespace {...}>}> is not in list"));
  auto json_cycle = Render(self + "{{ [ns] | tojson }}");
  EXPECT_EQ(json_cycle.status().code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(MessageHas(json_cycle.status(),
                         "t.jinja:1: filter 'tojson': Object of type Namespace is not JSON serializable"));

  // Chains of lists and of namespaces 250000 deep: freeing them at the end of the render does not
  // recurse, and printing stops at kMaxValueDepth (both overflowed the stack before).
  const std::string chain = "{% for i in range(250) %}{% for j in range(1000) %}{% set ns.x = [ns.x] %}"
                            "{% set ns.z = namespace(z=ns.z) %}{% endfor %}{% endfor %}";
  const std::string init = "{% set ns = namespace(x=none, y=none, z=none) %}";
  EXPECT_EQ(R(init + chain + "freed"), "freed");
  auto deep = Render(init + chain + "\n{{ ns.x }}");
  EXPECT_EQ(deep.status().code(), StatusCode::kResourceExhausted);
  EXPECT_TRUE(MessageHas(deep.status(), "t.jinja:2: output: maximum recursion depth exceeded while getting the repr"));
  // Each walk stops at its bound, shown on shorter chains.
  const std::string short_chain = init + "{% for i in range(1000) %}{% set ns.x = [ns.x] %}{% set ns.y = [ns.y] %}"
                                  "{% set ns.z = namespace(z=ns.z) %}{% endfor %}";
  EXPECT_TRUE(MessageHas(Render(short_chain + "{{ ns.z }}").status(), "values nested deeper than 256 levels"));
  EXPECT_TRUE(MessageHas(Render(short_chain + "{{ ns.x | tojson }}").status(), "nesting deeper than 64 levels"));
  EXPECT_EQ(R(short_chain + "{{ ns.x == ns.x }}"), "True");
  auto cmp = Render(short_chain + "{{ ns.x == ns.y }}");
  EXPECT_EQ(cmp.status().code(), StatusCode::kResourceExhausted);
  EXPECT_TRUE(MessageHas(cmp.status(), "operator '==': maximum recursion depth exceeded in comparison"));
  EXPECT_TRUE(MessageHas(Render(short_chain + "{{ ns.x < ns.y }}").status(),
                         "maximum recursion depth exceeded in comparison"));

  // Doubling: forty lists, 2^40 paths through them. Output and comparison stop at their limits.
  const std::string doubled =
      "{% set ns = namespace(x=1, y=1) %}{% for i in range(40) %}{% set ns.x = [ns.x, ns.x] %}"
      "{% set ns.y = [ns.y, ns.y] %}{% endfor %}";
  auto big = Render(doubled + "{{ ns.x }}");
  EXPECT_EQ(big.status().code(), StatusCode::kResourceExhausted);
  EXPECT_TRUE(MessageHas(big.status(), "output: the printed value exceeds the 4194304-byte limit"));
  EXPECT_TRUE(MessageHas(Render(doubled + "{{ ns.x | join(',') }}").status(), "exceeds the 4194304-byte limit"));
  EXPECT_TRUE(MessageHas(Render(doubled + "{{ ns.x | tojson }}").status(),
                         "tojson output exceeds the 4194304-byte limit"));
  EXPECT_EQ(R(doubled + "{{ ns.x == ns.x }}{{ ns.x in [ns.x] }}"), "TrueTrue");
  EXPECT_TRUE(MessageHas(Render(doubled + "{{ ns.x == ns.y }}").status(),
                         "comparison visits more than 4000000 values"));
  auto index = Render(doubled + "{{ [1].index(ns.x) }}");  // the message shows the value cut short
  EXPECT_TRUE(MessageHas(index.status(), "[[[[[[[[[[1, 1], [1, 1]], [[1, 1], [1, 1]]]"));
  EXPECT_TRUE(MessageHas(index.status(), "... is not in list"));
  EXPECT_LT(index.status().message().size(), 400u);

  // A context deeper than the bound is refused before rendering.
  json ctx = 1;
  for (int i = 0; i < 300; ++i) ctx = json::array({ctx});
  EXPECT_TRUE(MessageHas(Render("{{ x }}", {{"x", ctx}}).status(),
                         "t.jinja: context variable 'x': JSON nested deeper than 256 levels"));
}

TEST(ChatTemplate, RenderChatTemplateValidatesItsInputs) {
  auto t = jinja::Template::Parse("{{ messages | length }}{{ bos_token is defined }}{{ tools is none }}", "c");
  ASSERT_TRUE(t.ok());
  ChatTemplateOptions o;
  auto out = RenderChatTemplate(**t, json::array({{{"role", "user"}, {"content", "hi"}}}), o);
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  EXPECT_EQ(*out, "1FalseTrue");
  EXPECT_FALSE(RenderChatTemplate(**t, json::object(), o).ok());
  o.extra = json::array();
  EXPECT_FALSE(RenderChatTemplate(**t, json::array(), o).ok());
}

TEST(ChatTemplate, ReservedNamesCannotBeKwargs) {
  auto t = jinja::Template::Parse("{{ messages | length }}{{ bos_token }}{{ range(2) | list | length }}", "c");
  ASSERT_TRUE(t.ok());
  const json messages = json::array({{{"role", "user"}, {"content", "hi"}}});
  ChatTemplateOptions o;
  o.bos_token = "<s>";
  o.extra = {{"enable_thinking", false}};
  auto out = RenderChatTemplate(**t, messages, o);
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  EXPECT_EQ(*out, "1<s>2");
  for (std::string_view name : kReservedChatTemplateNames) {
    SCOPED_TRACE(std::string(name));
    EXPECT_TRUE(IsReservedChatTemplateName(name));
    o.extra = {{"enable_thinking", false}, {std::string(name), "x"}};
    auto refused = RenderChatTemplate(**t, messages, o);
    EXPECT_EQ(refused.status().code(), StatusCode::kInvalidArgument);
    EXPECT_TRUE(MessageHas(refused.status(), "'" + std::string(name) + "' is reserved"));
  }
  EXPECT_FALSE(IsReservedChatTemplateName("enable_thinking"));
}

}  // namespace
}  // namespace shoal
