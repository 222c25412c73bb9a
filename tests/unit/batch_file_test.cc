// Batch files (`shoal worker --batch`): fields, defaults, and errors that name the line and field.
#include <gtest/gtest.h>

#include "tests/unit/test_files.h"
#include "worker/batch_file.h"

namespace shoal {
namespace {

using testing::MessageHas;

TEST(BatchFile, ParsesEveryFieldAndDefaults) {
  auto r = ParseBatchFile(
      "{\"id\": \"q1\", \"prompt_ids\": [1, 2], \"max_tokens\": 3, \"temperature\": 0.5, \"top_k\": 4, "
      "\"top_p\": 0.9, \"seed\": 18446744073709551615, \"stop_ids\": [7]}\n"
      "\n"
      "  \n"
      "{\"prompt_ids\": [9]}",
      "b.jsonl", 10, 16, 64);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ASSERT_EQ(r->size(), 2u);
  const GenerateRequest& a = (*r)[0].request;
  EXPECT_EQ((*r)[0].id_json, "\"q1\"");
  EXPECT_EQ(a.prompt, (std::vector<int32_t>{1, 2}));
  EXPECT_EQ(a.max_tokens, 3);
  EXPECT_FLOAT_EQ(a.sampling.temperature, 0.5f);
  EXPECT_EQ(a.sampling.top_k, 4);
  EXPECT_FLOAT_EQ(a.sampling.top_p, 0.9f);
  EXPECT_EQ(a.sampling.seed, 18446744073709551615ull);
  EXPECT_EQ(a.stop_ids, (std::vector<int32_t>{7}));
  EXPECT_EQ((*r)[1].id_json, "4");  // default id: the line number
  EXPECT_EQ((*r)[1].request.max_tokens, 16);
  EXPECT_EQ(FormatBatchResult((*r)[0], {{5, 6}, "length"}),
            "{\"id\": \"q1\", \"prompt_tokens\": 2, \"tokens\": [5,6], \"finish_reason\": \"length\"}\n");
}

TEST(BatchFile, ErrorsNameLineAndField) {
  struct Case {
    std::string text, want;
  };
  const Case cases[] = {
      {"{\"prompt_ids\": [1]}\n{\"prompt_ids\": [1, 10]}", "b.jsonl:2: prompt_ids[1]: must be in [0, 9]"},
      {"{\"prompt_ids\": [1], \"max_tokens\": 0}", "b.jsonl:1: max_tokens: must be in [1,"},
      {"{\"prompt_ids\": []}", "b.jsonl:1: prompt_ids: empty prompt"},
      {"{\"max_tokens\": 2}", "b.jsonl:1: prompt_ids: missing"},
      {"{\"prompt_ids\": [1], \"temprature\": 1}", "b.jsonl:1: temprature: unknown field"},
      {"{\"prompt_ids\": [1], \"top_p\": 0}", "b.jsonl:1: top_p: must be in (0, 1]"},
      {"{\"prompt_ids\": [1], \"seed\": -3}", "b.jsonl:1: seed: expected a non-negative integer"},
      {"{\"prompt_ids\": [1.5]}", "b.jsonl:1: prompt_ids[0]: expected an integer"},
      {"{\"prompt_ids\": \"1 2\"}", "b.jsonl:1: prompt_ids: expected an array"},
      {"{\"prompt_ids\": [1], \"id\": [1]}", "b.jsonl:1: id: expected a string or an integer"},
      {"[1, 2]", "b.jsonl:1: expected a JSON object"},
      {"\n\n{\"prompt_ids\": [1", "b.jsonl:3: not valid JSON"},
      {"{\"prompt_ids\": [1, 2], \"max_tokens\": 63}", "b.jsonl:1: prompt_ids (2) + max_tokens (63) exceed the model's context of 64"},
  };
  for (const Case& c : cases) {
    auto r = ParseBatchFile(c.text, "b.jsonl", 10, 16, 64);
    ASSERT_FALSE(r.ok()) << c.text;
    EXPECT_TRUE(MessageHas(r.status(), c.want)) << r.status().ToString() << "\nwanted: " << c.want;
  }
}

TEST(BatchFile, EmptyFileHasNoRequests) {
  auto r = ParseBatchFile("", "b.jsonl", 10, 16, 64);
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->empty());
}

}  // namespace
}  // namespace shoal
