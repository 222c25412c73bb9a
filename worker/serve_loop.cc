#include "worker/serve_loop.h"

#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>

#include "control/frame_socket.h"
#include "worker/expert_rebalance.h"
#include "worker/scheduler.h"

namespace shoal {

namespace {

// Frames from the coordinator, filled by the reader thread.
class Inbox {
 public:
  void Push(control::Message m) {
    std::lock_guard<std::mutex> lock(mu_);
    q_.push_back(std::move(m));
    cv_.notify_one();
  }
  void Lose(std::string why) {
    std::lock_guard<std::mutex> lock(mu_);
    if (lost_.empty()) lost_ = std::move(why);
    cv_.notify_one();
  }
  // Waits up to ms for something to arrive; then takes everything.
  void Drain(int64_t wait_ms, std::deque<control::Message>* out, std::string* lost) {
    std::unique_lock<std::mutex> lock(mu_);
    if (wait_ms > 0) {
      cv_.wait_for(lock, std::chrono::milliseconds(wait_ms), [&] { return !q_.empty() || !lost_.empty(); });
    }
    out->swap(q_);
    q_.clear();
    *lost = lost_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<control::Message> q_;
  std::string lost_;
};

ScheduledRequest FromSubmit(control::Submit&& m) {
  ScheduledRequest r;
  r.id = m.request;
  r.prompt = std::move(m.prompt);
  r.max_tokens = static_cast<int>(std::min<uint32_t>(m.max_tokens, 1u << 30));
  r.sampling = m.sampling;
  r.stop_ids = std::move(m.stop_ids);
  r.resumed_output = m.resumed_output;
  r.bias_ids = std::move(m.bias_ids);
  r.bias_values = std::move(m.bias_values);
  r.logprobs = m.logprobs;
  r.prompt_logprobs = m.prompt_logprobs;
  r.fork_of = m.fork_of;
  r.json_schema = std::move(m.json_schema);
  return r;
}

std::string HostName() {
  char buf[256] = {0};
  if (gethostname(buf, sizeof(buf) - 1) != 0) return "unknown";
  return buf;
}

// Opens the connection and does the handshake; returns the heartbeat period.
StatusOr<uint32_t> Handshake(control::FrameSocket& sock, StepEngine& engine, const ServeLoopOptions& o) {
  const ModelConfig& c = engine.config();
  control::Hello h;
  h.group = o.group;
  h.rank = static_cast<uint32_t>(engine.group().rank());
  h.size = static_cast<uint32_t>(engine.group().size());
  h.model = o.model_name;
  h.vocab_size = static_cast<uint32_t>(c.vocab_size);
  h.max_context = static_cast<uint32_t>(c.max_position_embeddings);
  h.max_num_seqs = static_cast<uint32_t>(engine.max_num_seqs());
  h.block_size = static_cast<uint32_t>(engine.kv_blocks().block_size());
  h.kv_blocks = static_cast<uint64_t>(engine.kv_blocks().num_blocks());
  h.kv_tokens = static_cast<uint64_t>(engine.kv_blocks().MaxSequenceTokens(engine.max_step_tokens()));
  h.kv_bytes_per_token = static_cast<uint64_t>(engine.kv_bytes_per_token());
  h.num_experts = static_cast<uint32_t>(std::max(c.num_experts, 0));
  for (int e : o.local_experts) h.local_experts.push_back(static_cast<uint32_t>(e));
  h.pid = static_cast<uint64_t>(getpid());
  h.host = HostName();
  if (const char* t = std::getenv("SHOAL_CONTROL_TOKEN"); t != nullptr) h.token = t;
  if (o.tp_group != nullptr) {
    h.tp_size = static_cast<uint32_t>(o.tp_group->size());
    h.tp_rank = static_cast<uint32_t>(o.tp_group->rank());
    h.replica = static_cast<uint32_t>(o.replica);
  }
  SHOAL_RETURN_IF_ERROR(sock.SendMessage(h));
  SHOAL_ASSIGN_OR_RETURN(control::Message reply, sock.ReadMessage(30000));
  if (auto* r = std::get_if<control::Reject>(&reply)) {
    return InvalidArgument("coordinator " + sock.peer() + " rejected this worker: " + r->reason);
  }
  auto* w = std::get_if<control::Welcome>(&reply);
  if (w == nullptr) return InvalidArgument("coordinator " + sock.peer() + " answered Hello with something else");
  return w->heartbeat_ms;
}

// Attention TP: tp_rank 0's Submit and Cancel frames of this pass, to the replica's other ranks (whole
// frames back to back, decoded as the control socket decodes them). On the leader `msgs` is what it
// drained; on the others it becomes the leader's frames.
Status ShareWithReplica(comm::Group& tp, std::deque<control::Message>* msgs, Deadline deadline) {
  std::string frames;
  if (tp.rank() == 0) {
    for (const control::Message& m : *msgs) {
      if (std::holds_alternative<control::Submit>(m) || std::holds_alternative<control::Cancel>(m)) {
        frames += control::EncodeFrame(m);
      }
    }
  }
  SHOAL_ASSIGN_OR_RETURN(std::string got, comm::BroadcastBytes(tp, frames, 0, deadline));
  if (tp.rank() == 0) return Status::Ok();
  // Keep only what the coordinator may send a non-leader (Wake, Shutdown); requests come from the leader.
  std::erase_if(*msgs, [](const control::Message& m) {
    return std::holds_alternative<control::Submit>(m) || std::holds_alternative<control::Cancel>(m);
  });
  const auto* p = reinterpret_cast<const uint8_t*>(got.data());
  size_t pos = 0;
  while (pos < got.size()) {
    if (got.size() - pos < control::kHeaderBytes) return Internal("a truncated frame from the replica's tp_rank 0");
    SHOAL_ASSIGN_OR_RETURN(control::FrameHeader h, control::DecodeHeader({p + pos, control::kHeaderBytes}));
    pos += control::kHeaderBytes;
    if (got.size() - pos < h.payload_bytes) return Internal("a truncated frame from the replica's tp_rank 0");
    SHOAL_ASSIGN_OR_RETURN(control::Message m,
                           control::DecodePayload(static_cast<control::MessageType>(h.type), {p + pos, h.payload_bytes}));
    pos += h.payload_bytes;
    msgs->push_back(std::move(m));
  }
  return Status::Ok();
}

}  // namespace

Status RunServeLoop(StepEngine& engine, const ServeLoopOptions& o) {
  comm::Group& g = engine.group();
  const std::string me = "rank " + std::to_string(g.rank()) + " of group " + o.group;
  const auto step_deadline = [&] { return Deadline::AfterMs(engine.collective_timeout_ms()); };

  // Connect and shake hands on every rank; the ranks agree on the outcome, so none serves alone.
  std::unique_ptr<control::FrameSocket> sock;
  uint32_t heartbeat_ms = 500;
  Status local = Status::Ok();
  {
    auto s = control::FrameSocket::Connect(o.coordinator_host, o.coordinator_port, o.connect_timeout_ms);
    if (s.ok()) {
      sock = std::move(*s);
      StatusOr<uint32_t> hb = Handshake(*sock, engine, o);
      if (hb.ok()) heartbeat_ms = *hb; else local = hb.status();
    } else {
      local = s.status();
    }
    std::vector<int64_t> failed = {local.ok() ? 0 : 1};
    Status st = g.AllReduceSum(failed, Deadline::AfterMs(o.connect_timeout_ms + 35000));
    if (!local.ok()) return local.WithContext(me);
    if (!st.ok()) return st.WithContext(me);
    if (failed[0] > 0) return Unavailable(me + ": another rank could not join the coordinator (its log says why)");
  }

  Scheduler sched(engine, o.vocabulary);
  ExpertRebalancer rebalancer(engine, o.model_dir, o.weight_dtype);
  Inbox inbox;
  std::thread reader([&] {
    while (true) {
      StatusOr<control::Message> m = sock->ReadMessage();
      if (!m.ok()) {
        inbox.Lose(m.status().message());
        return;
      }
      inbox.Push(std::move(*m));
    }
  });

  // Progress for the heartbeat thread, published after every step.
  std::mutex hb_mu;
  std::condition_variable hb_cv;
  bool hb_stop = false;
  control::Heartbeat hb_state;
  hb_state.kv_blocks_total = static_cast<uint64_t>(engine.kv_blocks().num_blocks());
  std::thread heartbeat([&] {
    std::unique_lock<std::mutex> lock(hb_mu);
    while (!hb_stop) {
      control::Heartbeat copy = hb_state;
      lock.unlock();
      if (Status sent = sock->SendMessage(copy); !sent.ok()) {
        inbox.Lose(sent.message());  // the serve loop stops the group at its next agreement
        return;
      }
      lock.lock();
      hb_cv.wait_for(lock, std::chrono::milliseconds(heartbeat_ms), [&] { return hb_stop; });
    }
  });
  auto publish = [&] {
    std::lock_guard<std::mutex> lock(hb_mu);
    const SchedulerStats& s = sched.stats();
    hb_state.steps = s.steps;
    hb_state.step_seconds_total = s.step_seconds_total;
    hb_state.last_step_seconds = s.last_step_seconds;
    hb_state.preemptions = s.preemptions;
    hb_state.running = static_cast<uint32_t>(sched.running());
    hb_state.waiting = static_cast<uint32_t>(sched.waiting());
    hb_state.kv_blocks_used = static_cast<uint64_t>(engine.kv_blocks().num_blocks() - engine.kv_blocks().free_blocks());
    hb_state.expert_tokens = engine.expert_rows_total();
    // Past the wire's bound (no model today) the per-layer counts are left out rather than break the frame.
    if (engine.layer_expert_rows().size() <= control::kMaxLayerExpertCounts) {
      hb_state.layer_expert_tokens = engine.layer_expert_rows();
    }
    hb_state.iteration_tokens = s.iteration_tokens;
    hb_state.queue_seconds = s.queue_seconds;
    hb_state.prefill_seconds = s.prefill_seconds;
    hb_state.decode_seconds = s.decode_seconds;
    const StepPhases p = engine.phase_seconds_total();
    hb_state.attention_seconds = p.attention;
    hb_state.mlp_seconds = p.mlp;
    hb_state.exchange_seconds = p.exchange;
    hb_state.tp_seconds = p.tp;
    hb_state.placement_generation = rebalancer.generation();
    hb_state.rebalance_failed = rebalancer.last_failed();
    hb_state.rebalance_error = rebalancer.last_error().substr(0, control::kMaxStringBytes);
  };

  Status result = Status::Ok();
  std::deque<control::Message> msgs;
  std::vector<control::TokenEvent> events;
  bool group_busy = false;
  bool shutdown = false;
  std::string lost;
  comm::Group* tp = o.tp_group != nullptr && o.tp_group->size() > 1 ? o.tp_group : nullptr;
  const bool reports = tp == nullptr || tp->rank() == 0;
  auto send_events = [&] {
    if (!reports) {  // the replica's tp_rank 0 reports the same tokens
      events.clear();
      return;
    }
    // Frames of at most kEventsPerFrame events, so even a FailAll of every queued request (each with
    // an error message) stays far below the frame size limit. A failed send loses the coordinator:
    // a finish that never arrived would leave its request open there, so the group stops instead
    // (the coordinator sees the connection close and fails the group's requests).
    constexpr size_t kEventsPerFrame = 512;
    for (size_t i = 0; i < events.size(); i += kEventsPerFrame) {
      control::Tokens t;
      t.events.assign(std::make_move_iterator(events.begin() + i),
                      std::make_move_iterator(events.begin() + std::min(events.size(), i + kEventsPerFrame)));
      if (Status sent = sock->SendMessage(t); !sent.ok()) {
        inbox.Lose(sent.message());
        break;
      }
    }
    events.clear();
  };
  while (true) {
    inbox.Drain(sched.HasWork() || group_busy ? 0 : o.idle_poll_ms, &msgs, &lost);
    if (tp != nullptr) {
      if (Status st = ShareWithReplica(*tp, &msgs, step_deadline()); !st.ok()) {
        if (comm::IsGroupFailure(st)) {
          result = st.WithContext(me + " (handing requests to its attention-TP replica)");
          break;
        }
        if (lost.empty()) lost = "attention-TP hand-over: " + st.message();  // the group stops together below
      }
    }
    for (control::Message& m : msgs) {
      if (auto* s = std::get_if<control::Submit>(&m)) {
        const uint64_t id = s->request;
        Status st = sched.Submit(FromSubmit(std::move(*s)));
        if (!st.ok()) events.push_back({id, -1, control::FinishReason::kError, st.message()});
      } else if (auto* c = std::get_if<control::Cancel>(&m)) {
        sched.Cancel(c->request);
      } else if (auto* rb = std::get_if<control::Rebalance>(&m)) {
        rebalancer.Begin(*rb);
      } else if (std::holds_alternative<control::Shutdown>(m)) {
        shutdown = true;
      }  // Wake only ends the idle wait; anything else from the coordinator is ignored.
    }
    msgs.clear();
    send_events();
    publish();  // also when idle: cancellations change what the heartbeat reports
    // {has work, clean stop, coordinator lost, the rebalancer's values}, each the max over the ranks.
    std::vector<int64_t> v = {sched.HasWork() ? 1 : 0, shutdown ? 1 : 0, lost.empty() ? 0 : 1};
    for (int64_t x : rebalancer.AgreementValues()) v.push_back(x);
    Status st = g.AllReduceMax(v, step_deadline());
    if (!st.ok()) {
      result = st.WithContext(me);
      break;
    }
    if (v[2] > 0) {
      result = Unavailable(me + ": " + (lost.empty() ? "another rank lost the coordinator" : "lost the coordinator: " + lost));
      break;
    }
    if (v[1] > 0) break;
    // A pending placement the whole group has loaded: switched to (or dropped) now, before the next
    // step, by every rank alike.
    bool switched = false;
    if (Status sw = rebalancer.Act(std::span<const int64_t>(v).subspan(3), &switched); !sw.ok()) {
      result = sw.WithContext(me);  // the others switched: this rank cannot serve with them any more
      break;
    }
    if (switched) publish();
    group_busy = v[0] > 0;
    if (!group_busy) continue;
    st = sched.Step(&events);
    if (!st.ok()) {
      result = st.WithContext(me);
      break;
    }
    send_events();
    publish();
  }
  // Whatever is still here ends with the reason, so the coordinator is never left waiting on it.
  sched.FailAll(result.ok() ? "the worker is shutting down" : result.message(), &events);
  send_events();
  {
    std::lock_guard<std::mutex> lock(hb_mu);
    hb_stop = true;
  }
  hb_cv.notify_all();
  heartbeat.join();
  (void)sock->SendMessage(control::Bye{result.ok() ? "shutdown" : result.message()});
  sock->Shutdown();
  reader.join();
  return result;
}

}  // namespace shoal
