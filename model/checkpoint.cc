#include "model/checkpoint.h"

#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

namespace shoal {

namespace fs = std::filesystem;

namespace {

StatusOr<std::string> ReadSmallFile(const std::string& path, size_t limit) {
  std::error_code ec;
  const auto size = fs::file_size(path, ec);
  if (ec) return NotFound(path + ": cannot read: " + ec.message());
  if (size > limit) return InvalidArgument(path + ": " + std::to_string(size) + " bytes exceeds the limit of " +
                                           std::to_string(limit));
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// A shard name from the index must be a plain file name inside the checkpoint directory.
bool IsPlainFileName(const std::string& s) {
  return !s.empty() && s.find('/') == std::string::npos && s.find('\\') == std::string::npos && s != "." &&
         s != "..";
}

}  // namespace

StatusOr<std::unique_ptr<Checkpoint>> Checkpoint::Open(const std::string& dir, TensorFilter filter) {
  auto ck = std::unique_ptr<Checkpoint>(new Checkpoint());
  ck->dir_ = dir;
  const fs::path single = fs::path(dir) / "model.safetensors";
  const fs::path index = fs::path(dir) / "model.safetensors.index.json";

  std::vector<std::string> shard_names;
  std::error_code ec;
  if (fs::exists(index, ec)) {
    SHOAL_ASSIGN_OR_RETURN(std::string text, ReadSmallFile(index.string(), 64u << 20));
    auto j = nlohmann::json::parse(text, nullptr, false);
    if (j.is_discarded() || !j.is_object()) return InvalidArgument(index.string() + ": not valid JSON");
    auto wm = j.find("weight_map");
    if (wm == j.end() || !wm->is_object()) return InvalidArgument(index.string() + ": missing object 'weight_map'");
    std::set<std::string> wanted;
    for (auto it = wm->begin(); it != wm->end(); ++it) {
      if (!it.value().is_string() || !IsPlainFileName(it.value().get<std::string>())) {
        return InvalidArgument(index.string() + ": weight_map['" + it.key() +
                               "'] must be a file name in the checkpoint directory");
      }
      const std::string shard = it.value().get<std::string>();
      ck->index_[it.key()] = shard;
      if (!filter || filter(it.key())) wanted.insert(shard);
    }
    shard_names.assign(wanted.begin(), wanted.end());
  } else if (fs::exists(single, ec)) {
    shard_names.push_back("model.safetensors");
  } else {
    return NotFound(dir + ": no model.safetensors or model.safetensors.index.json");
  }

  for (const std::string& shard : shard_names) {
    const std::string path = (fs::path(dir) / shard).string();
    SHOAL_ASSIGN_OR_RETURN(auto file, SafetensorsFile::Open(path));
    for (const auto& [name, entry] : file->header().tensors) {
      if (filter && !filter(name)) continue;
      auto mapped = ck->index_.find(name);
      // With an index, a tensor belongs to the shard the index names; a duplicate elsewhere is ignored.
      if (!ck->index_.empty() && (mapped == ck->index_.end() || mapped->second != shard)) continue;
      if (!entry.dtype_supported) {
        // Kept out of the table; Get() explains why if it is ever asked for.
        continue;
      }
      SHOAL_ASSIGN_OR_RETURN(TensorView view, file->Tensor(name));
      const size_t align = DTypeSize(view.dtype);
      if (reinterpret_cast<uintptr_t>(view.data) % align != 0) {
        auto copy = std::make_unique<uint8_t[]>(view.nbytes);
        std::memcpy(copy.get(), view.data, view.nbytes);
        view.data = copy.get();
        ck->aligned_copies_.push_back(std::move(copy));
      }
      ck->tensors_[name] = Loaded{std::move(view), path};
    }
    ck->files_.push_back(std::move(file));
  }
  return ck;
}

StatusOr<TensorView> Checkpoint::Get(const std::string& name) const {
  auto it = tensors_.find(name);
  if (it != tensors_.end()) return it->second.view;
  auto in_index = index_.find(name);
  for (const auto& f : files_) {
    auto e = f->header().tensors.find(name);
    if (e != f->header().tensors.end() && !e->second.dtype_supported) {
      return Unimplemented(f->path() + ": tensor '" + name + "' has dtype " + e->second.dtype_name +
                           "; shoal computes with F32, F16 or BF16 weights");
    }
  }
  if (in_index != index_.end()) {
    return NotFound(dir_ + ": tensor '" + name + "' is listed in model.safetensors.index.json (shard " +
                    in_index->second + ") but was not found there or was excluded by the load filter");
  }
  return NotFound(dir_ + ": missing tensor '" + name + "'");
}

StatusOr<TensorView> Checkpoint::Get(const std::string& name, const std::vector<int64_t>& shape) const {
  SHOAL_ASSIGN_OR_RETURN(TensorView v, Get(name));
  if (v.shape != shape) {
    return InvalidArgument(tensors_.at(name).file + ": tensor '" + name + "' has shape " + ShapeToString(v.shape) +
                           ", expected " + ShapeToString(shape) + " from config.json");
  }
  return v;
}

std::vector<std::string> Checkpoint::TensorNames() const {
  std::vector<std::string> names;
  for (const auto& [n, _] : tensors_) names.push_back(n);
  return names;
}

size_t Checkpoint::LoadedBytes() const {
  size_t total = 0;
  for (const auto& [_, t] : tensors_) total += t.view.nbytes;
  return total;
}

}  // namespace shoal
