// safetensors: the header parser (pure, bounds-checked, fuzzed) and a read-only mmap of one file.
//
// File layout (little endian):   [u64 n][n bytes of JSON header][data section]
// The header maps tensor name → {dtype, shape, data_offsets:[begin,end]} (offsets relative to the data
// section) plus an optional "__metadata__" string map. Validation follows the reference implementation:
// header size capped, offsets in bounds, tensors sorted by offset tile the data section exactly (no
// overlap, no gaps), and numel × element size == end - begin with overflow checks. A git-LFS pointer
// file (what a clone without `git lfs pull` leaves) is recognised and named as such.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "common/dtype.h"
#include "common/status.h"

namespace shoal {

// Largest header accepted (the reference uses 100 MB too): a header is metadata, never bulk data.
constexpr uint64_t kSafetensorsMaxHeaderBytes = 100ull << 20;

struct SafetensorsEntry {
  std::string dtype_name;      // as written: "BF16", "F32", "I64", ...
  bool dtype_supported = false;  // one of F32 / F16 / BF16, which shoal computes with
  DType dtype = DType::kF32;   // valid when dtype_supported
  std::vector<int64_t> shape;
  uint64_t begin = 0;          // offsets within the data section
  uint64_t end = 0;
};

struct SafetensorsHeader {
  uint64_t header_bytes = 0;  // n
  uint64_t data_offset = 0;   // 8 + n: where the data section starts in the file
  std::map<std::string, SafetensorsEntry> tensors;
  std::map<std::string, std::string> metadata;
};

// True when the bytes look like a git-LFS pointer file rather than safetensors.
bool IsGitLfsPointer(const uint8_t* data, size_t size);

// Parses and validates the header of a whole file image of `size` bytes. `file_name` only labels
// errors. Never reads outside [data, data + size).
StatusOr<SafetensorsHeader> ParseSafetensorsHeader(const uint8_t* data, size_t size,
                                                   const std::string& file_name);

// A tensor's bytes inside a mapped file (or any owned buffer). Shape is row-major.
struct TensorView {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  const void* data = nullptr;
  size_t nbytes = 0;

  int64_t numel() const;
  int64_t dim(int i) const { return shape.at(static_cast<size_t>(i)); }
};

std::string ShapeToString(const std::vector<int64_t>& shape);

// One safetensors file, memory-mapped read-only. The mapping lives as long as the object.
class SafetensorsFile {
 public:
  static StatusOr<std::unique_ptr<SafetensorsFile>> Open(const std::string& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  const SafetensorsHeader& header() const { return header_; }
  // The named tensor; NotFound or Unimplemented (dtype) errors name the file and tensor.
  StatusOr<TensorView> Tensor(const std::string& name) const;

 private:
  SafetensorsFile() = default;
  std::string path_;
  const uint8_t* map_ = nullptr;
  size_t size_ = 0;
  SafetensorsHeader header_;
};

}  // namespace shoal
