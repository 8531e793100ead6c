#include "server/metrics.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

namespace lserve::server {
namespace {

// vLLM's buckets, so dashboards made for it read lserve too.
const std::vector<double> kTtftBuckets = {0.001, 0.005, 0.01, 0.02,  0.04,  0.06,  0.08, 0.1,
                                          0.25,  0.5,   0.75, 1.0,   2.5,   5.0,   7.5,  10.0,
                                          20.0,  40.0,  80.0, 160.0, 640.0, 2560.0};
const std::vector<double> kItlBuckets = {0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2,  0.3,  0.4, 0.5,
                                         0.75, 1.0,   2.5,  5.0,   7.5, 10.0, 20.0, 40.0, 80.0};
const std::vector<double> kE2eBuckets = {0.3,  0.5,   0.8,   1.0,   1.5,   2.0,    2.5,
                                         5.0,  10.0,  15.0,  20.0,  30.0,  40.0,   50.0,
                                         60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0};

std::string escape_label(const std::string& v) {
  std::string out;
  for (char c : v) {
    if (c == '\\' || c == '"') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out;
}

std::string number(double v) {
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  return fmt::format("{}", v);
}

void header(std::string& out, const std::string& name, const char* type, const char* help) {
  out += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
}

void sample(std::string& out, const std::string& name, const std::string& labels, double v) {
  out += fmt::format("{}{{{}}} {}\n", name, labels, number(v));
}

}  // namespace

double kv_cache_usage(const EngineSnapshot& s) {
  const int used = s.pages_used + s.stream_pages_used;
  const int total = s.pages_total + s.stream_pages_total;
  return total > 0 ? static_cast<double>(used) / total : 0.0;
}

double prefix_cache_hit_rate(const EngineSnapshot& s) {
  return s.prefix_cache_queries > 0
             ? static_cast<double>(s.prefix_cache_hits) / s.prefix_cache_queries
             : 0.0;
}

Histogram::Histogram(std::vector<double> upper_bounds)
    : bounds_(std::move(upper_bounds)), counts_(bounds_.size() + 1, 0) {}

void Histogram::observe(double value) {
  const size_t i = std::lower_bound(bounds_.begin(), bounds_.end(), value) - bounds_.begin();
  ++counts_[i];
  sum_ += value;
  ++count_;
}

void Histogram::render(std::string& out, const std::string& name, const std::string& labels) const {
  uint64_t cum = 0;
  for (size_t i = 0; i <= bounds_.size(); ++i) {
    cum += counts_[i];
    const std::string le = i < bounds_.size() ? number(bounds_[i]) : "+Inf";
    out += fmt::format("{}_bucket{{{},le=\"{}\"}} {}\n", name, labels, le, cum);
  }
  out += fmt::format("{}_sum{{{}}} {}\n", name, labels, number(sum_));
  out += fmt::format("{}_count{{{}}} {}\n", name, labels, count_);
}

Metrics::Metrics(std::string model_name)
    : labels_(fmt::format("model_name=\"{}\"", escape_label(model_name))),
      ttft_(kTtftBuckets),
      itl_(kItlBuckets),
      e2e_(kE2eBuckets) {}

void Metrics::observe_time_to_first_token(double s) {
  std::lock_guard lock(mu_);
  ttft_.observe(s);
}
void Metrics::observe_inter_token_latency(double s) {
  std::lock_guard lock(mu_);
  itl_.observe(s);
}
void Metrics::observe_e2e_latency(double s) {
  std::lock_guard lock(mu_);
  e2e_.observe(s);
}
void Metrics::count_prompt_tokens(int64_t n) {
  std::lock_guard lock(mu_);
  prompt_tokens_ += n;
}
void Metrics::count_generation_tokens(int64_t n) {
  std::lock_guard lock(mu_);
  generation_tokens_ += n;
}
void Metrics::count_finished(FinishReason reason) {
  std::lock_guard lock(mu_);
  ++finished_[std::string(finish_reason_name(reason))];
}
void Metrics::count_rejected(const std::string& reason) {
  std::lock_guard lock(mu_);
  ++rejected_[reason];
}
void Metrics::set_engine(const EngineSnapshot& snapshot) {
  std::lock_guard lock(mu_);
  engine_ = snapshot;
}
EngineSnapshot Metrics::engine() const {
  std::lock_guard lock(mu_);
  return engine_;
}
int64_t Metrics::generation_tokens() const {
  std::lock_guard lock(mu_);
  return generation_tokens_;
}

std::string Metrics::render() const {
  std::lock_guard lock(mu_);
  std::string out;
  const std::string& l = labels_;
  const EngineSnapshot& e = engine_;
  const auto gauge = [&](const char* name, const char* help, double v) {
    header(out, name, "gauge", help);
    sample(out, name, l, v);
  };
  const auto counter = [&](const char* name, const char* help, double v) {
    header(out, name, "counter", help);
    sample(out, name, l, v);
  };
  gauge("lserve:num_requests_running", "Requests in the running batch.", e.running);
  gauge("lserve:num_requests_waiting", "Requests waiting to be scheduled.", e.waiting);
  gauge("lserve:kv_cache_usage_perc", "KV cache usage: share of all KV pages in use (1 = full).",
        kv_cache_usage(e));
  header(out, "lserve:kv_cache_pages_used", "gauge", "KV pages in use, per pool.");
  sample(out, "lserve:kv_cache_pages_used", l + ",pool=\"retrieval\"", e.pages_used);
  sample(out, "lserve:kv_cache_pages_used", l + ",pool=\"streaming\"", e.stream_pages_used);
  header(out, "lserve:kv_cache_pages_total", "gauge", "KV pages in each pool.");
  sample(out, "lserve:kv_cache_pages_total", l + ",pool=\"retrieval\"", e.pages_total);
  sample(out, "lserve:kv_cache_pages_total", l + ",pool=\"streaming\"", e.stream_pages_total);
  header(out, "lserve:kv_cache_pages_cached", "gauge",
         "KV pages no request uses, kept for prefix caching (evicted when memory is needed).");
  sample(out, "lserve:kv_cache_pages_cached", l + ",pool=\"retrieval\"", e.pages_cached);
  sample(out, "lserve:kv_cache_pages_cached", l + ",pool=\"streaming\"", e.stream_pages_cached);
  counter("lserve:prefix_cache_queries_total",
          "Prompt tokens looked up in the prefix cache at admission.", e.prefix_cache_queries);
  counter("lserve:prefix_cache_hits_total",
          "Prompt tokens whose KV was found in the prefix cache (not computed).",
          e.prefix_cache_hits);
  gauge("lserve:prefix_cache_hit_rate", "prefix_cache_hits_total / prefix_cache_queries_total.",
        prefix_cache_hit_rate(e));
  counter("lserve:prompt_tokens_total", "Prompt tokens of accepted requests.", prompt_tokens_);
  counter("lserve:generation_tokens_total", "Generated tokens.", generation_tokens_);
  counter("lserve:prefill_tokens_computed_total",
          "Prompt tokens run through the model, including recomputation after preemption.",
          e.prefill_tokens_computed);
  counter("lserve:num_preemptions_total", "Sequences preempted (KV pages ran out).", e.preemptions);
  counter("lserve:engine_steps_total", "Engine steps run.", e.steps);
  counter("lserve:decode_kv_bytes_read_total",
          "KV bytes decode attention read (streaming heads, selected pages, selector statistics).",
          e.decode_kv_bytes_read);
  counter("lserve:decode_kv_bytes_dense_total",
          "KV bytes dense decode attention would have read for the same steps.",
          e.decode_kv_bytes_dense);
  gauge("lserve:sparse_kv_read_ratio",
        "Sparse attention's share of the dense KV bytes read in decode, since start (1 = dense).",
        e.decode_kv_bytes_dense > 0 ? e.decode_kv_bytes_read / e.decode_kv_bytes_dense : 1.0);

  header(out, "lserve:request_success_total", "counter", "Finished requests by finish reason.");
  for (const char* r : {"stop", "length", "cancelled", "error"}) {
    const auto it = finished_.find(r);
    sample(out, "lserve:request_success_total", l + fmt::format(",finished_reason=\"{}\"", r),
           it == finished_.end() ? 0 : it->second);
  }
  header(out, "lserve:request_rejected_total", "counter",
         "Requests refused before reaching the engine, by reason.");
  for (const char* r : {"queue_full", "shutting_down"}) {
    const auto it = rejected_.find(r);
    sample(out, "lserve:request_rejected_total", l + fmt::format(",reason=\"{}\"", r),
           it == rejected_.end() ? 0 : it->second);
  }
  header(out, "lserve:time_to_first_token_seconds", "histogram",
         "Time from arrival to the first generated token.");
  ttft_.render(out, "lserve:time_to_first_token_seconds", l);
  header(out, "lserve:inter_token_latency_seconds", "histogram",
         "Time between consecutive tokens of a request.");
  itl_.render(out, "lserve:inter_token_latency_seconds", l);
  header(out, "lserve:e2e_request_latency_seconds", "histogram",
         "Time from arrival to the final token.");
  e2e_.render(out, "lserve:e2e_request_latency_seconds", l);
  return out;
}

}  // namespace lserve::server
