// The BPE model of tokenizer.json: vocab + ranked merges, applied to one pre-token at a time with a
// min-heap of candidate pairs (lowest rank first, leftmost on ties), exactly HF's Word::merge_all, so
// a pre-token of n characters costs O(n log n). Characters missing from the vocab fall back to their
// <0xAB> byte tokens (byte_fallback) or to unk_token (fused runs when fuse_unk).
#include <cstdio>
#include <queue>

#include "model/tokenizer_internal.h"

namespace shoal::tok_internal {
namespace {

constexpr int64_t kMaxId = (int64_t{1} << 24) - 1;  // bounds the id → token table a file can ask for

uint64_t PairKey(int32_t a, int32_t b) { return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b); }

}  // namespace

StatusOr<std::unique_ptr<BpeModel>> BpeModel::Parse(const json& j, const std::string& path) {
  if (!j.is_object()) return InvalidArgument(path + ": expected an object");
  std::string type = "BPE";
  SHOAL_RETURN_IF_ERROR(GetString(j, "type", path, type, false));
  if (type != "BPE") return Unimplemented(Sub(path, "type") + ": unsupported model " + Quote(type) + " (only BPE)");
  if (const json* d = Field(j, "dropout")) {
    return Unimplemented(Sub(path, "dropout") + ": BPE dropout is not supported (got " + d->dump() + ")");
  }
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    if (const json* v = Field(j, key); v != nullptr && !(v->is_string() && v->get<std::string>().empty())) {
      return Unimplemented(Sub(path, key) + ": not supported (got " + v->dump() + ")");
    }
  }
  auto m = std::unique_ptr<BpeModel>(new BpeModel());
  SHOAL_RETURN_IF_ERROR(GetBool(j, "fuse_unk", path, m->fuse_unk_));
  SHOAL_RETURN_IF_ERROR(GetBool(j, "byte_fallback", path, m->byte_fallback_));
  SHOAL_RETURN_IF_ERROR(GetBool(j, "ignore_merges", path, m->ignore_merges_));

  const json* vocab = Field(j, "vocab");
  if (vocab == nullptr || !vocab->is_object()) return InvalidArgument(Sub(path, "vocab") + ": expected an object");
  m->vocab_.reserve(vocab->size());
  int32_t max_id = -1;
  for (auto it = vocab->begin(); it != vocab->end(); ++it) {
    if (!it.value().is_number_integer() || it.value().get<int64_t>() < 0 || it.value().get<int64_t>() > kMaxId) {
      return InvalidArgument(Sub(path, "vocab") + "[" + Quote(it.key()) + "]: expected an id in [0, " +
                             std::to_string(kMaxId) + "], got " + it.value().dump());
    }
    const auto id = static_cast<int32_t>(it.value().get<int64_t>());
    m->vocab_[it.key()] = id;
    max_id = std::max(max_id, id);
  }
  m->id_to_token_.assign(static_cast<size_t>(max_id + 1), nullptr);
  for (const auto& [tok, id] : m->vocab_) {
    if (m->id_to_token_[id] == nullptr || tok < *m->id_to_token_[id]) m->id_to_token_[id] = &tok;
  }

  const json* merges = Field(j, "merges");
  if (merges != nullptr && !merges->is_array()) return InvalidArgument(Sub(path, "merges") + ": expected an array");
  if (merges != nullptr) {
    m->merges_.reserve(merges->size());
    for (size_t i = 0; i < merges->size(); ++i) {
      const json& e = (*merges)[i];
      const std::string mpath = Sub(Sub(path, "merges"), i);
      std::string a, b;
      if (e.is_string()) {
        const std::string s = e.get<std::string>();
        const size_t sp = s.find(' ');
        if (sp == std::string::npos || s.find(' ', sp + 1) != std::string::npos) {
          return InvalidArgument(mpath + ": expected \"left right\" with one space, got " + Quote(s));
        }
        a = s.substr(0, sp);
        b = s.substr(sp + 1);
      } else if (e.is_array() && e.size() == 2 && e[0].is_string() && e[1].is_string()) {
        a = e[0].get<std::string>();
        b = e[1].get<std::string>();
      } else {
        return InvalidArgument(mpath + ": expected a string \"a b\" or a pair [\"a\", \"b\"]");
      }
      auto ia = m->vocab_.find(a), ib = m->vocab_.find(b), iab = m->vocab_.find(a + b);
      for (auto [it, name] : {std::pair{ia, &a}, std::pair{ib, &b}}) {
        if (it == m->vocab_.end()) return InvalidArgument(mpath + ": token " + Quote(*name) + " is not in the vocab");
      }
      if (iab == m->vocab_.end()) {
        return InvalidArgument(mpath + ": merged token " + Quote(a + b) + " is not in the vocab");
      }
      m->merges_[PairKey(ia->second, ib->second)] = {static_cast<int32_t>(i), iab->second};  // later wins, as HF
    }
  }

  std::string unk;
  SHOAL_RETURN_IF_ERROR(GetString(j, "unk_token", path, unk, false));
  if (Field(j, "unk_token") != nullptr) {
    auto it = m->vocab_.find(unk);
    if (it == m->vocab_.end()) return InvalidArgument(Sub(path, "unk_token") + ": " + Quote(unk) + " is not in the vocab");
    m->unk_id_ = it->second;
  }
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    auto it = m->vocab_.find(std::string_view(name));
    m->byte_ids_[b] = it == m->vocab_.end() ? -1 : it->second;
  }
  return m;
}

std::optional<int32_t> BpeModel::Find(std::string_view token) const {
  auto it = vocab_.find(token);
  if (it == vocab_.end()) return std::nullopt;
  return it->second;
}

const std::string* BpeModel::IdToToken(int32_t id) const {
  if (id < 0 || static_cast<size_t>(id) >= id_to_token_.size()) return nullptr;
  return id_to_token_[id];
}

void BpeModel::Tokenize(std::string_view word, std::vector<int32_t>& out) const {
  if (word.empty()) return;
  if (ignore_merges_) {
    if (auto it = vocab_.find(word); it != vocab_.end()) {
      out.push_back(it->second);
      return;
    }
  }
  {
    std::lock_guard<std::mutex> lock(cache_mu_);
    if (auto it = cache_.find(word); it != cache_.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  std::vector<int32_t> ids;
  MergeWord(word, ids);
  out.insert(out.end(), ids.begin(), ids.end());
  if (word.size() <= 256) {
    std::lock_guard<std::mutex> lock(cache_mu_);
    if (cache_.size() >= kCacheMax) cache_.clear();
    cache_.emplace(std::string(word), std::move(ids));
  }
}

void BpeModel::MergeWord(std::string_view w, std::vector<int32_t>& out) const {
  // 1. Initial symbols: one per character, or its byte tokens, or unk (HF BPE::merge_word).
  std::vector<int32_t> sym;
  sym.reserve(w.size());
  std::optional<int32_t> pending_unk;
  size_t pos = 0;
  while (pos < w.size()) {
    const size_t at = pos;
    NextCodepoint(w, pos);
    const std::string_view ch = w.substr(at, pos - at);
    if (auto it = vocab_.find(ch); it != vocab_.end()) {
      if (pending_unk) sym.push_back(*pending_unk);
      pending_unk.reset();
      sym.push_back(it->second);
      continue;
    }
    if (byte_fallback_) {
      bool all = true;
      for (char c : ch) all &= byte_ids_[static_cast<uint8_t>(c)] >= 0;
      if (all) {  // HF leaves a pending unk pending here, so it lands after these bytes
        for (char c : ch) sym.push_back(byte_ids_[static_cast<uint8_t>(c)]);
        continue;
      }
    }
    if (unk_id_) {
      if (pending_unk && !fuse_unk_) sym.push_back(*pending_unk);
      pending_unk = *unk_id_;
    }
  }
  if (pending_unk) sym.push_back(*pending_unk);

  // 2. Merge the lowest-ranked adjacent pair until none applies. Symbols form a linked list over `sym`.
  const int n = static_cast<int>(sym.size());
  if (n < 2 || merges_.empty()) {
    out.insert(out.end(), sym.begin(), sym.end());
    return;
  }
  std::vector<int> prev(n), next(n);
  std::vector<char> alive(n, 1);
  for (int i = 0; i < n; ++i) {
    prev[i] = i - 1;
    next[i] = i + 1 < n ? i + 1 : -1;
  }
  struct Cand {
    int32_t rank;
    int pos;
    int32_t new_id;
    bool operator>(const Cand& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  std::priority_queue<Cand, std::vector<Cand>, std::greater<Cand>> q;
  auto push = [&](int left) {
    const int right = next[left];
    if (right < 0) return;
    auto it = merges_.find(PairKey(sym[left], sym[right]));
    if (it != merges_.end()) q.push({it->second.rank, left, it->second.new_id});
  };
  for (int i = 0; i + 1 < n; ++i) push(i);
  while (!q.empty()) {
    const Cand c = q.top();
    q.pop();
    if (!alive[c.pos] || next[c.pos] < 0) continue;
    const int right = next[c.pos];
    auto it = merges_.find(PairKey(sym[c.pos], sym[right]));
    if (it == merges_.end() || it->second.new_id != c.new_id) continue;  // stale entry
    sym[c.pos] = c.new_id;
    alive[right] = 0;
    next[c.pos] = next[right];
    if (next[right] >= 0) prev[next[right]] = c.pos;
    if (prev[c.pos] >= 0) push(prev[c.pos]);
    push(c.pos);
  }
  for (int i = 0; i >= 0; i = next[i]) out.push_back(sym[i]);
}

}  // namespace shoal::tok_internal
