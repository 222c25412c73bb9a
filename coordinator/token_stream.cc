#include "coordinator/token_stream.h"

#include <algorithm>

namespace shoal::coord {

void SessionWakeup::Notify() {
  if (news_) return;
  news_ = true;
  timer_.cancel();  // completes a pending Wait; a no-op when the session is busy
}

awaitable<void> SessionWakeup::Wait() {
  if (!news_) {
    timer_.expires_at(Clock::time_point::max());
    boost::system::error_code ec;
    co_await timer_.async_wait(asio::redirect_error(use_awaitable, ec));
  }
  news_ = false;
}

TokenStream::TokenStream(asio::any_io_executor executor, size_t slot, const Tokenizer& tokenizer,
                         bool skip_special_tokens, std::vector<std::string> stop_strings, int32_t min_tokens,
                         std::shared_ptr<SessionWakeup> wakeup)
    : slot_(slot),
      detok_(tokenizer, skip_special_tokens),
      stops_(std::move(stop_strings)),
      min_tokens_(static_cast<size_t>(std::max(min_tokens, 0))),
      wakeup_(wakeup ? std::move(wakeup) : std::make_shared<SessionWakeup>(executor)) {}

void TokenStream::Push(RequestEvent event) {
  pending_.push_back(std::move(event));
  wakeup_->Notify();
}

awaitable<void> TokenStream::WaitForNews() {
  if (done) co_return;
  co_await wakeup_->Wait();
}

void TokenStream::Process() {
  for (RequestEvent& e : pending_) {
    if (done) break;
    Accept(e);
  }
  pending_.clear();
}

void TokenStream::EndLocally(const char* reason) {
  if (done) return;
  done = true;
  finish_reason = reason;
  wakeup_->Notify();
}

void TokenStream::Accept(RequestEvent& e) {
  if (e.prompt_position >= 0) {
    if (e.logprob) prompt_logprobs.push_back(std::move(*e.logprob));
    return;
  }
  if (e.token >= 0) {
    output_ids.push_back(e.token);
    chunk_ids.push_back(e.token);
    if (e.logprob) {
      logprobs.push_back(std::move(*e.logprob));
    }
    // The token that matched a stop id (EOS included) ends the text without appearing in it, as in
    // OpenAI and vLLM.
    if (!e.stop_token) {
      StatusOr<std::string> piece = detok_.Append(e.token);
      if (!piece.ok()) {
        done = true;
        finish_reason = "error";
        error = std::make_shared<const api::ApiError>(
            api::ApiError{500, piece.status().message(), "server_error", "", "detokenize_failed"});
        ended_here = "error";
        return;
      }
      StopMatcher::Result out = stops_.Append(*piece, /*is_final=*/false, output_ids.size() >= min_tokens_);
      text += out.text;
      if (out.stop) {
        // OpenAI semantics: the output ends just before the stop string; the rank is still generating.
        done = true;
        finish_reason = "stop";
        ended_here = "stop";
        return;
      }
    }
  }
  if (!e.end) return;
  done = true;
  finish_reason = e.finish_reason;
  if (e.error) {
    error = std::move(e.error);
    return;
  }
  StopMatcher::Result out = stops_.Append(detok_.Finish(), /*is_final=*/true, output_ids.size() >= min_tokens_);
  text += out.text;
  if (out.stop) finish_reason = "stop";
}

}  // namespace shoal::coord
