#include "worker/sequence_table.h"

#include <string>

namespace shoal {

StatusOr<SeqId> SequenceTable::New() {
  if (live_ >= max_num_seqs_) {
    return ResourceExhausted("all " + std::to_string(max_num_seqs_) +
                             " sequence slots are in use (engine.max_num_seqs)");
  }
  ++live_;
  for (size_t i = 0; i < seqs_.size(); ++i) {
    if (!seqs_[i].live) {
      seqs_[i] = Sequence{true, 0, {}};
      return static_cast<SeqId>(i);
    }
  }
  seqs_.push_back(Sequence{true, 0, {}});
  return static_cast<SeqId>(seqs_.size() - 1);
}

void SequenceTable::Release(SeqId seq, KvBlockPool& pool) {
  if (seq < 0 || static_cast<size_t>(seq) >= seqs_.size() || !seqs_[seq].live) return;
  pool.Release(&seqs_[seq].blocks);
  seqs_[seq].live = false;
  seqs_[seq].length = 0;
  --live_;
}

int64_t SequenceTable::Length(SeqId seq) const {
  if (seq < 0 || static_cast<size_t>(seq) >= seqs_.size() || !seqs_[seq].live) return -1;
  return seqs_[seq].length;
}

Status SequenceTable::Validate(const std::vector<ForwardInput>& batch, const ModelConfig& c,
                               int64_t* num_tokens) const {
  int64_t T = 0;
  for (size_t b = 0; b < batch.size(); ++b) {
    const ForwardInput& in = batch[b];
    const std::string name = "sequence " + std::to_string(in.seq);
    if (Length(in.seq) < 0) return InvalidArgument(name + ": unknown sequence");
    for (size_t a = 0; a < b; ++a) {
      if (batch[a].seq == in.seq) return InvalidArgument(name + ": appears twice in one step");
    }
    if (in.tokens.empty()) return InvalidArgument(name + ": no tokens in this step");
    for (int32_t tok : in.tokens) {
      if (tok < 0 || tok >= c.vocab_size) {
        return InvalidArgument(name + ": token id " + std::to_string(tok) + " outside the vocabulary [0, " +
                               std::to_string(c.vocab_size) + ")");
      }
    }
    const int64_t new_length = seqs_[in.seq].length + static_cast<int64_t>(in.tokens.size());
    if (new_length > c.max_position_embeddings) {
      return OutOfRange(name + ": " + std::to_string(new_length) +
                        " tokens exceed the model's max_position_embeddings (" +
                        std::to_string(c.max_position_embeddings) + ")");
    }
    T += static_cast<int64_t>(in.tokens.size());
  }
  *num_tokens = T;
  return Status::Ok();
}

Status SequenceTable::Reserve(const std::vector<ForwardInput>& batch, KvBlockPool& pool) {
  std::vector<size_t> old_sizes;
  old_sizes.reserve(batch.size());
  for (const ForwardInput& in : batch) {
    Sequence& s = seqs_[in.seq];
    old_sizes.push_back(s.blocks.size());
    Status st = pool.Reserve(&s.blocks, s.length + static_cast<int64_t>(in.tokens.size()));
    if (!st.ok()) {
      for (size_t i = 0; i < old_sizes.size(); ++i) {
        std::vector<int32_t>& blocks = seqs_[batch[i].seq].blocks;
        std::vector<int32_t> extra(blocks.begin() + static_cast<int64_t>(old_sizes[i]), blocks.end());
        blocks.resize(old_sizes[i]);
        pool.Release(&extra);
      }
      return st.WithContext("sequence " + std::to_string(in.seq));
    }
  }
  return Status::Ok();
}

void SequenceTable::BuildRows(const std::vector<ForwardInput>& batch, int block_size, StepRows* rows) const {
  rows->tokens.clear();
  rows->positions.clear();
  rows->slots.clear();
  rows->input.clear();
  rows->logit_rows.clear();
  for (size_t b = 0; b < batch.size(); ++b) {
    const ForwardInput& in = batch[b];
    const Sequence& s = seqs_[in.seq];
    const int64_t first = static_cast<int64_t>(rows->tokens.size());
    const int64_t n = static_cast<int64_t>(in.tokens.size());
    for (int64_t i = 0; i < n; ++i) {
      const int64_t pos = s.length + i;
      rows->tokens.push_back(in.tokens[i]);
      rows->positions.push_back(static_cast<int32_t>(pos));
      rows->slots.push_back(static_cast<int64_t>(s.blocks[pos / block_size]) * block_size + pos % block_size);
      rows->input.push_back(static_cast<int32_t>(b));
    }
    for (int64_t i = in.all_logits ? 0 : n - 1; i < n; ++i) rows->logit_rows.push_back(first + i);
  }
}

void SequenceTable::Advance(const std::vector<ForwardInput>& batch) {
  for (const ForwardInput& in : batch) seqs_[in.seq].length += static_cast<int64_t>(in.tokens.size());
}

}  // namespace shoal
