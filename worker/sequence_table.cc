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
  pool.Release(&seqs_[seq].tables);
  seqs_[seq].live = false;
  seqs_[seq].length = 0;
  --live_;
}

StatusOr<SeqId> SequenceTable::Fork(SeqId parent, KvBlockPool& pool, std::vector<std::pair<int32_t, int32_t>>* copies) {
  if (Length(parent) < 0) return InvalidArgument("fork of unknown sequence " + std::to_string(parent));
  SHOAL_ASSIGN_OR_RETURN(SeqId child, New());
  // seqs_ may have grown: index it only now.
  const Sequence& p = seqs_[parent];
  Status st = pool.Fork(p.tables, p.length, &seqs_[child].tables, copies);
  if (!st.ok()) {
    Release(child, pool);
    return st;
  }
  seqs_[child].length = seqs_[parent].length;
  return child;
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

Status SequenceTable::Reserve(const std::vector<ForwardInput>& batch, KvBlockPool& pool,
                              std::vector<size_t>* old_sizes) {
  // Every table of a sequence has the same length (they grow together), so one size per input
  // undoes a reservation.
  std::vector<size_t> sizes;
  sizes.reserve(batch.size());
  for (const ForwardInput& in : batch) {
    Sequence& s = seqs_[in.seq];
    sizes.push_back(s.tables.empty() ? 0 : s.tables[0].size());
    Status st = pool.Reserve(&s.tables, s.length + static_cast<int64_t>(in.tokens.size()));
    if (!st.ok()) {
      Unreserve(batch, sizes, pool);
      return st.WithContext("sequence " + std::to_string(in.seq));
    }
  }
  if (old_sizes != nullptr) *old_sizes = std::move(sizes);
  return Status::Ok();
}

void SequenceTable::Unreserve(const std::vector<ForwardInput>& batch, const std::vector<size_t>& old_sizes,
                              KvBlockPool& pool) {
  for (size_t i = 0; i < old_sizes.size(); ++i) {
    KvTables extra;
    for (std::vector<int32_t>& t : seqs_[batch[i].seq].tables) {
      extra.emplace_back(t.begin() + static_cast<int64_t>(old_sizes[i]), t.end());
      t.resize(old_sizes[i]);
    }
    pool.Release(&extra);
  }
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
      rows->tokens.push_back(in.tokens[i]);
      rows->positions.push_back(static_cast<int32_t>(s.length + i));
      rows->input.push_back(static_cast<int32_t>(b));
    }
    for (int64_t i = in.all_logits ? 0 : n - 1; i < n; ++i) rows->logit_rows.push_back(first + i);
  }
  const size_t T = rows->tokens.size();
  const size_t groups = batch.empty() ? 1 : seqs_[batch[0].seq].tables.size();
  rows->slots.resize(groups * T);
  for (size_t g = 0; g < groups; ++g) {
    for (size_t r = 0; r < T; ++r) {
      const std::vector<int32_t>& table = seqs_[batch[rows->input[r]].seq].tables[g];
      const int64_t pos = rows->positions[r];
      rows->slots[g * T + r] = static_cast<int64_t>(table[pos / block_size]) * block_size + pos % block_size;
    }
  }
}

void SequenceTable::Advance(const std::vector<ForwardInput>& batch, KvBlockPool& pool) {
  for (const ForwardInput& in : batch) {
    Sequence& s = seqs_[in.seq];
    s.length += static_cast<int64_t>(in.tokens.size());
    pool.FreeBefore(&s.tables, s.length);
  }
}

}  // namespace shoal
