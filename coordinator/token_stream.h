// One request as its HTTP session sees it, on the session's thread: the events the request table
// delivered (request_table.h), turned into the text the client receives — detokenized incrementally,
// with stop strings applied — and the wake-up of the session waiting for them.
//
// Single-threaded: Push runs on the session's thread (the front end moves events there), and so does
// the session that reads. Process() is plain computation, testable without sockets.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "coordinator/asio.h"
#include "coordinator/request_table.h"
#include "coordinator/stop_strings.h"
#include "model/tokenizer.h"

namespace shoal::coord {

// The session's wake-up, shared by the streams of one HTTP request (its n choices): any of them
// having news wakes it once.
class SessionWakeup {
 public:
  explicit SessionWakeup(asio::any_io_executor executor) : timer_(executor) {}
  void Notify();
  // Returns at once when Notify came since the last return, else waits for it.
  awaitable<void> Wait();

 private:
  bool news_ = false;
  asio::steady_timer timer_;
};

class TokenStream : public RequestSink {
 public:
  // `slot`: the session thread's index in the front end. `tokenizer` must outlive the stream.
  // Stop strings end the output only from the `min_tokens`-th token on (vLLM's rule: a match must end
  // in the text of a token at or after it). `wakeup`: shared with the request's other choices (null:
  // one of its own).
  TokenStream(asio::any_io_executor executor, size_t slot, const Tokenizer& tokenizer, bool skip_special_tokens,
              std::vector<std::string> stop_strings, int32_t min_tokens = 0,
              std::shared_ptr<SessionWakeup> wakeup = nullptr);

  size_t slot() const { return slot_; }
  uint64_t id = 0;  // the table's id, once admitted

  // From the request table, on the session's thread: queues the event and wakes the session.
  void Push(RequestEvent event);
  // The session: returns at once when there is something to Process (in this stream or another
  // sharing the wake-up), else waits for Push.
  awaitable<void> WaitForNews();

  // Turns the queued events into text and ids, in order. After an end, or after a stop string
  // matched, further events are ignored.
  void Process();

  // Ends the request here (its client left): later events are ignored, and a waiting session wakes.
  void EndLocally(const char* reason);

  // What Process produced. The session takes `text` and `chunk_ids` as it sends them.
  std::string text;                // released text not yet sent
  std::vector<int32_t> chunk_ids;  // ids since the session last took them
  std::vector<int32_t> output_ids;  // every token, the stop token included (usage counts it)
  std::vector<api::TokenLogprob> prompt_logprobs;  // positions 1, 2, … of the prompt, when asked for
  // With logprobs asked for: one per token not yet taken (a stream takes them per chunk, a whole
  // response at the end).
  std::vector<api::TokenLogprob> logprobs;
  bool done = false;
  std::string finish_reason;  // with done: "stop", "length", "error", "cancelled"
  std::shared_ptr<const api::ApiError> error;
  // Set when this side ended the request (a stop string matched, or its text could not be made): the
  // table must be told, with this reason, so that the rank stops generating.
  const char* ended_here = nullptr;

 private:
  void Accept(RequestEvent& e);

  size_t slot_;
  IncrementalDetokenizer detok_;
  StopMatcher stops_;
  size_t min_tokens_ = 0;
  std::vector<RequestEvent> pending_;
  std::shared_ptr<SessionWakeup> wakeup_;
};

}  // namespace shoal::coord
