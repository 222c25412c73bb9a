// A Hugging Face checkpoint directory: config.json plus safetensors weights, either one
// `model.safetensors` or shards listed by `model.safetensors.index.json`.
//
// Weights are memory-mapped, never copied (except a tensor whose bytes are misaligned for its dtype,
// which gets an aligned private copy). A filter chooses which tensors are loaded: a rank of an
// expert-parallel group loads the dense weights and only its own experts, and shards that hold
// nothing it wants are never opened.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"
#include "model/safetensors.h"

namespace shoal {

class Checkpoint {
 public:
  using TensorFilter = std::function<bool(const std::string& tensor_name)>;

  // Opens `dir`. With a filter, only tensors for which it returns true are available.
  static StatusOr<std::unique_ptr<Checkpoint>> Open(const std::string& dir, TensorFilter filter = nullptr);

  const std::string& dir() const { return dir_; }

  // The tensor `name` with exactly `shape`; errors name the file and the tensor.
  StatusOr<TensorView> Get(const std::string& name, const std::vector<int64_t>& shape) const;
  // The tensor `name`, any shape.
  StatusOr<TensorView> Get(const std::string& name) const;
  bool Has(const std::string& name) const { return tensors_.count(name) != 0; }

  // Names of every tensor loaded (after the filter).
  std::vector<std::string> TensorNames() const;
  // Sum of the byte sizes of the loaded tensors.
  size_t LoadedBytes() const;

 private:
  struct Loaded {
    TensorView view;
    std::string file;
  };
  std::string dir_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::vector<std::unique_ptr<uint8_t[]>> aligned_copies_;
  std::map<std::string, Loaded> tensors_;
  // Tensors the index lists in shards that the filter did not open (for "missing tensor" messages).
  std::map<std::string, std::string> index_;
};

}  // namespace shoal
