#include "model/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>

namespace shoal {

namespace {

struct DTypeInfo {
  const char* name;
  uint64_t bits;  // element size in bits (sub-byte types exist in the format)
};

// Every dtype the safetensors format defines, so that a checkpoint holding, say, an I64 buffer still
// validates; shoal refuses those tensors only when asked to load them.
constexpr DTypeInfo kDTypes[] = {
    {"BOOL", 8},     {"U8", 8},       {"I8", 8},      {"F8_E5M2", 8}, {"F8_E4M3", 8},
    {"F8_E8M0", 8},  {"I16", 16},     {"U16", 16},    {"F16", 16},    {"BF16", 16},
    {"I32", 32},     {"U32", 32},     {"F32", 32},    {"I64", 64},    {"U64", 64},
    {"F64", 64},     {"F4", 4},       {"F6_E2M3", 6}, {"F6_E3M2", 6}, {"C64", 64},
};

const DTypeInfo* FindDType(const std::string& s) {
  for (const auto& d : kDTypes)
    if (s == d.name) return &d;
  return nullptr;
}

bool MulOverflows(uint64_t a, uint64_t b, uint64_t* out) { return __builtin_mul_overflow(a, b, out); }

}  // namespace

bool IsGitLfsPointer(const uint8_t* data, size_t size) {
  static constexpr char kPrefix[] = "version https://git-lfs.github.com/spec/";
  const size_t n = sizeof(kPrefix) - 1;
  return size >= n && std::memcmp(data, kPrefix, n) == 0;
}

std::string ShapeToString(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

int64_t TensorView::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

StatusOr<SafetensorsHeader> ParseSafetensorsHeader(const uint8_t* data, size_t size,
                                                   const std::string& file) {
  if (IsGitLfsPointer(data, size)) {
    return InvalidArgument(file + ": is a git-LFS pointer file, not safetensors data (fetch the real file, "
                           "e.g. `git lfs pull`)");
  }
  if (size < 8) {
    return InvalidArgument(file + ": truncated: " + std::to_string(size) + " bytes, a safetensors file "
                           "starts with an 8-byte header length");
  }
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | data[i];
  if (n > kSafetensorsMaxHeaderBytes) {
    return InvalidArgument(file + ": header length " + std::to_string(n) + " exceeds the " +
                           std::to_string(kSafetensorsMaxHeaderBytes) + "-byte limit (corrupt file?)");
  }
  if (n > size - 8) {
    return InvalidArgument(file + ": truncated: header claims " + std::to_string(n) + " bytes but the file "
                           "has " + std::to_string(size - 8) + " after the length");
  }
  SafetensorsHeader h;
  h.header_bytes = n;
  h.data_offset = 8 + n;
  const uint64_t data_size = size - h.data_offset;

  const char* text = reinterpret_cast<const char*>(data + 8);
  if (n == 0 || text[0] != '{') return InvalidArgument(file + ": header is not a JSON object");
  nlohmann::json j = nlohmann::json::parse(text, text + n, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return InvalidArgument(file + ": header is not valid JSON");

  struct Span {
    uint64_t begin, end;
    const std::string* name;
  };
  std::vector<Span> spans;
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& name = it.key();
    const auto& v = it.value();
    if (name == "__metadata__") {
      if (!v.is_object()) return InvalidArgument(file + ": __metadata__ must be an object of strings");
      for (auto m = v.begin(); m != v.end(); ++m) {
        if (!m.value().is_string()) {
          return InvalidArgument(file + ": __metadata__." + m.key() + " must be a string");
        }
        h.metadata[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    const std::string where = file + ": tensor '" + name + "'";
    if (!v.is_object()) return InvalidArgument(where + ": entry is not an object");
    auto dt = v.find("dtype");
    auto sh = v.find("shape");
    auto off = v.find("data_offsets");
    if (dt == v.end() || !dt->is_string()) return InvalidArgument(where + ": missing or non-string 'dtype'");
    if (sh == v.end() || !sh->is_array()) return InvalidArgument(where + ": missing or non-array 'shape'");
    if (off == v.end() || !off->is_array() || off->size() != 2 || !(*off)[0].is_number_unsigned() ||
        !(*off)[1].is_number_unsigned()) {
      return InvalidArgument(where + ": 'data_offsets' must be two non-negative integers");
    }
    SafetensorsEntry e;
    e.dtype_name = dt->get<std::string>();
    const DTypeInfo* info = FindDType(e.dtype_name);
    if (!info) return InvalidArgument(where + ": unknown dtype '" + e.dtype_name + "'");
    if (e.dtype_name == "F32") e.dtype = DType::kF32, e.dtype_supported = true;
    if (e.dtype_name == "F16") e.dtype = DType::kF16, e.dtype_supported = true;
    if (e.dtype_name == "BF16") e.dtype = DType::kBF16, e.dtype_supported = true;
    // FP8 weights come with block scales; the model loader pairs them (model/weights.cc).
    if (e.dtype_name == "F8_E4M3") e.dtype = DType::kF8E4M3, e.dtype_supported = true;

    uint64_t numel = 1;
    for (const auto& d : *sh) {
      if (!d.is_number_unsigned()) return InvalidArgument(where + ": shape entries must be non-negative integers");
      const uint64_t dim = d.get<uint64_t>();
      if (dim > static_cast<uint64_t>(INT64_MAX) || MulOverflows(numel, dim, &numel)) {
        return InvalidArgument(where + ": shape " + sh->dump() + " overflows");
      }
      e.shape.push_back(static_cast<int64_t>(dim));
    }
    e.begin = (*off)[0].get<uint64_t>();
    e.end = (*off)[1].get<uint64_t>();
    if (e.end < e.begin) return InvalidArgument(where + ": data_offsets end < begin");
    if (e.end > data_size) {
      return InvalidArgument(where + ": data_offsets [" + std::to_string(e.begin) + ", " + std::to_string(e.end) +
                             "] run past the data section (" + std::to_string(data_size) +
                             " bytes): file truncated or corrupt");
    }
    uint64_t bits = 0;
    if (MulOverflows(numel, info->bits, &bits)) return InvalidArgument(where + ": byte size overflows");
    const uint64_t expected = (bits + 7) / 8;
    if (expected != e.end - e.begin) {
      return InvalidArgument(where + ": shape " + ShapeToString(e.shape) + " of " + e.dtype_name + " needs " +
                             std::to_string(expected) + " bytes but data_offsets span " +
                             std::to_string(e.end - e.begin));
    }
    auto [pos, inserted] = h.tensors.emplace(name, std::move(e));
    spans.push_back({pos->second.begin, pos->second.end, &pos->first});
  }
  // The tensors, sorted by offset, must tile the data section: any overlap or gap means a corrupt or
  // hand-edited file.
  std::sort(spans.begin(), spans.end(), [](const Span& a, const Span& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  uint64_t cursor = 0;
  for (const Span& s : spans) {
    if (s.begin != cursor) {
      return InvalidArgument(file + ": tensor '" + *s.name + "': data_offsets begin at " + std::to_string(s.begin) +
                             " but the previous tensor ends at " + std::to_string(cursor) +
                             (s.begin < cursor ? " (overlap)" : " (gap)"));
    }
    cursor = s.end;
  }
  if (cursor != data_size) {
    return InvalidArgument(file + ": tensors cover " + std::to_string(cursor) + " bytes but the data section has " +
                           std::to_string(data_size));
  }
  return h;
}

StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return NotFound(path + ": cannot open: " + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    return IoError(path + ": fstat failed: " + std::strerror(err));
  }
  auto f = std::unique_ptr<SafetensorsFile>(new SafetensorsFile());
  f->path_ = path;
  f->size_ = static_cast<size_t>(st.st_size);
  if (f->size_ > 0) {
    void* p = ::mmap(nullptr, f->size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      const int err = errno;
      ::close(fd);
      return IoError(path + ": mmap failed: " + std::strerror(err));
    }
    f->map_ = static_cast<const uint8_t*>(p);
  }
  ::close(fd);  // the mapping keeps the file alive
  static const uint8_t kEmpty = 0;
  auto header = ParseSafetensorsHeader(f->map_ ? f->map_ : &kEmpty, f->size_, path);
  if (!header.ok()) return header.status();
  f->header_ = std::move(header).value();
  return f;
}

SafetensorsFile::~SafetensorsFile() {
  if (map_) ::munmap(const_cast<uint8_t*>(map_), size_);
}

StatusOr<TensorView> SafetensorsFile::Tensor(const std::string& name) const {
  auto it = header_.tensors.find(name);
  if (it == header_.tensors.end()) return NotFound(path_ + ": no tensor '" + name + "'");
  const SafetensorsEntry& e = it->second;
  if (!e.dtype_supported) {
    return Unimplemented(path_ + ": tensor '" + name + "' has dtype " + e.dtype_name +
                         "; shoal computes with F32, F16, BF16 or block-scaled F8_E4M3 weights");
  }
  TensorView v;
  v.name = name;
  v.dtype = e.dtype;
  v.shape = e.shape;
  v.data = map_ + header_.data_offset + e.begin;
  v.nbytes = e.end - e.begin;
  return v;
}

}  // namespace shoal
