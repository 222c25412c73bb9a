// The sequences an engine holds and the bookkeeping of one forward step over them, shared by the CPU
// engine (worker/engine.h) and the GPU one (worker/cuda/cuda_engine.h) so both accept and reject
// exactly the same batches.
//
// A step: Validate (nothing changes on a rejected batch) → Reserve (KV blocks for every input, all or
// nothing) → BuildRows (one row per new token: its position and KV slot) → the forward pass →
// Advance (the sequences' lengths grow by their tokens).
// Thread-safety: none; the engine loop owns it.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "common/status.h"
#include "model/model_config.h"
#include "worker/kv_cache.h"

namespace shoal {

using SeqId = int32_t;

struct ForwardInput {
  SeqId seq = -1;
  std::span<const int32_t> tokens;  // appended after the sequence's current length
  bool all_logits = false;          // logits for every new token, else only the last
};

struct ForwardOutput {
  std::vector<float> logits;  // [rows, vocab]
};

// One row per new token of a step, in batch order.
struct StepRows {
  std::vector<int32_t> tokens;
  std::vector<int32_t> positions;
  // KV slot of row r in layer group g (worker/kv_cache.h) at slots[g · rows + r]:
  // block * block_size + position % block_size, the block taken from the group's table.
  std::vector<int64_t> slots;
  std::vector<int32_t> input;      // index into the batch of the row's input
  std::vector<int64_t> logit_rows; // the rows whose logits the batch asks for, in batch order
};

class SequenceTable {
 public:
  explicit SequenceTable(int max_num_seqs) : max_num_seqs_(max_num_seqs) {}

  int max_num_seqs() const { return max_num_seqs_; }
  // ResourceExhausted when max_num_seqs sequences are already live.
  StatusOr<SeqId> New();
  // Frees the sequence's KV blocks. Unknown ids are ignored.
  void Release(SeqId seq, KvBlockPool& pool);
  // A new sequence equal to `parent` (its length and KV), sharing its full blocks (KvBlockPool::Fork):
  // the caller copies the storage of the *copies pairs. Nothing changes on an error.
  StatusOr<SeqId> Fork(SeqId parent, KvBlockPool& pool, std::vector<std::pair<int32_t, int32_t>>* copies);
  // -1 for an unknown sequence.
  int64_t Length(SeqId seq) const;
  // The block tables of a live sequence, one per layer group (at least one once it has tokens).
  const KvTables& Tables(SeqId seq) const { return seqs_[seq].tables; }
  // Its table of group 0 (the only one of a model without chunked layers).
  const std::vector<int32_t>& Blocks(SeqId seq) const { return seqs_[seq].tables.at(0); }

  // Known live sequences, each once, with at least one token, every token in the vocabulary and the
  // new length within max_position_embeddings. Sets *num_tokens to the tokens of the step.
  Status Validate(const std::vector<ForwardInput>& batch, const ModelConfig& config, int64_t* num_tokens) const;
  // KV blocks for every input's new length; on failure every table is as before. `old_sizes` (when
  // given) receives what Unreserve needs to give the blocks back.
  Status Reserve(const std::vector<ForwardInput>& batch, KvBlockPool& pool, std::vector<size_t>* old_sizes = nullptr);
  // Undoes a successful Reserve of the same batch (a TP peer could not reserve its share).
  void Unreserve(const std::vector<ForwardInput>& batch, const std::vector<size_t>& old_sizes, KvBlockPool& pool);
  // After Reserve.
  void BuildRows(const std::vector<ForwardInput>& batch, int block_size, StepRows* rows) const;
  // After a successful forward pass: the lengths grow, and chunked groups give back the blocks no later
  // query can see.
  void Advance(const std::vector<ForwardInput>& batch, KvBlockPool& pool);

 private:
  struct Sequence {
    bool live = false;
    int64_t length = 0;
    KvTables tables;
  };
  std::vector<Sequence> seqs_;
  int max_num_seqs_;
  int live_ = 0;
};

}  // namespace shoal
