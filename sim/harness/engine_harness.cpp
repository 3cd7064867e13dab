// Compiled harness of the streaming engine: the Verilated engine plus C++ bus models, driven
// from Python (ptqtp.sim.compiled) through a C ABI, with no Python on any cycle.
//
// The models reproduce cocotbext-axi's timing (AxiRamRead, AxiLiteMaster, AxiStreamSource and
// AxiStreamSink as the cocotb bench uses them), so that on the same stimulus this harness and
// the bench give the same outputs and the same cycle counts. Per rising edge, as in cocotb:
//   1. handshakes are sampled before the edge (valid && ready of the settled design);
//   2. the pause generators advance (they registered first on the clock edge in the bench);
//   3. every bus model processes the edge: sources drive their next beat when the last was
//      taken or none was valid and they are not paused; sinks record a handshake and set ready
//      from the pause value of the previous edge (and their queue limit);
//   4. the coroutines woken by those events run: the memory's read process refills its
//      response queue (at most 2 beats, like AxiRamRead), the host's access completes.
// Pauses: a fixed pattern (busy for round(duty * period) of every period cycles) or random
// with Python's Mersenne Twister seeded like random.Random(seed), value random() < duty.
//
// Verilator spells a port x__y as x___05Fy (Amaranth names members <port>__<member>).
// Built by ptqtp.sim.compiled with a generated engine_ports.h (ENGINE_HAS_AXI and the
// top-level header).

#include <verilated.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "engine_ports.h"
#if ENGINE_TRACE
#include <verilated_vcd_c.h>
#endif

namespace {

// ------------------------------------------------------------------ signals of any width

inline void put(CData& s, const uint32_t* w) { s = static_cast<CData>(w[0]); }
inline void put(SData& s, const uint32_t* w) { s = static_cast<SData>(w[0]); }
inline void put(IData& s, const uint32_t* w) { s = w[0]; }
inline void put(QData& s, const uint32_t* w) { s = w[0] | (static_cast<uint64_t>(w[1]) << 32); }
template <std::size_t N>
inline void put(VlWide<N>& s, const uint32_t* w) {
    for (std::size_t i = 0; i < N; ++i) s[i] = w[i];
}
inline uint64_t low64(CData s) { return s; }
inline uint64_t low64(SData s) { return s; }
inline uint64_t low64(IData s) { return s; }
inline uint64_t low64(QData s) { return s; }
template <std::size_t N>
inline uint64_t low64(const VlWide<N>& s) {
    return s[0] | (N > 1 ? static_cast<uint64_t>(s[1]) << 32 : 0);
}

// ------------------------------------------------------------------ Python's random.Random

class PyRandom {  // MT19937 seeded by init_by_array, random() = genrand_res53
  public:
    explicit PyRandom(uint64_t seed) {
        std::vector<uint32_t> key;
        do {
            key.push_back(static_cast<uint32_t>(seed));
            seed >>= 32;
        } while (seed);
        init(19650218u);
        std::size_t i = 1, j = 0;
        for (std::size_t k = std::max<std::size_t>(N, key.size()); k; --k) {
            mt_[i] = (mt_[i] ^ ((mt_[i - 1] ^ (mt_[i - 1] >> 30)) * 1664525u)) + key[j] + static_cast<uint32_t>(j);
            if (++i >= N) { mt_[0] = mt_[N - 1]; i = 1; }
            if (++j >= key.size()) j = 0;
        }
        for (std::size_t k = N - 1; k; --k) {
            mt_[i] = (mt_[i] ^ ((mt_[i - 1] ^ (mt_[i - 1] >> 30)) * 1566083941u)) - static_cast<uint32_t>(i);
            if (++i >= N) { mt_[0] = mt_[N - 1]; i = 1; }
        }
        mt_[0] = 0x80000000u;
    }
    double random() {
        const uint32_t a = next() >> 5, b = next() >> 6;
        return (a * 67108864.0 + b) * (1.0 / 9007199254740992.0);
    }

  private:
    static constexpr std::size_t N = 624, M = 397;
    uint32_t mt_[N];
    std::size_t index_ = N + 1;
    void init(uint32_t s) {
        mt_[0] = s;
        for (std::size_t i = 1; i < N; ++i)
            mt_[i] = 1812433253u * (mt_[i - 1] ^ (mt_[i - 1] >> 30)) + static_cast<uint32_t>(i);
        index_ = N;
    }
    uint32_t next() {
        if (index_ >= N) {
            for (std::size_t k = 0; k < N; ++k) {
                const uint32_t y = (mt_[k] & 0x80000000u) | (mt_[(k + 1) % N] & 0x7fffffffu);
                mt_[k] = mt_[(k + M) % N] ^ (y >> 1) ^ ((y & 1u) ? 0x9908b0dfu : 0u);
            }
            index_ = 0;
        }
        uint32_t y = mt_[index_++];
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c5680u;
        y ^= (y << 15) & 0xefc60000u;
        y ^= y >> 18;
        return y;
    }
};

class Pause {  // the bench's _pauses(duty, rng, period); off when duty is 0
  public:
    Pause() = default;
    Pause(double duty, int period, uint64_t seed)
        : on_(duty > 0), duty_(duty), period_(period), busy_(static_cast<int>(std::nearbyint(duty * period))),
          rng_(new PyRandom(seed)) {
        value_ = draw();
    }
    void advance() {
        prev_ = value_;
        if (on_) value_ = draw();
    }
    bool now() const { return value_; }     // what a source reads at this edge
    bool before() const { return prev_; }   // what a sink sampled before this edge

  private:
    bool draw() {
        if (period_) return (i_++ % period_) < busy_;
        return rng_->random() < duty_;
    }
    bool on_ = false, value_ = false, prev_ = false;
    double duty_ = 0;
    int period_ = 0, busy_ = 0;
    uint64_t i_ = 0;
    std::shared_ptr<PyRandom> rng_;
};

struct ReadBurst {
    uint64_t addr;
    unsigned beats, size, id, burst;
};

}  // namespace

struct Harness {
    std::unique_ptr<VerilatedContext> ctx;
    std::unique_ptr<ENGINE_TOP_CLASS> top;
    uint64_t edge = 0;
    bool running = false;  // the bus models run between resets, as in cocotb
#if ENGINE_TRACE
    std::unique_ptr<VerilatedVcdC> vcd;
    uint64_t trace_from = 0, trace_to = 0;
    std::string trace_path;
    bool tracing = false;
#endif

    // memory (AxiRamRead): AR sink (queue limit 2), read process, R source (queue limit 2)
    std::vector<uint8_t> mem;
    unsigned word_bytes = 0;
    Pause ar_pause, r_pause;
    std::deque<ReadBurst> ar_queue;
    bool ar_ready = false;
    bool reading = false;
    ReadBurst cur{};
    unsigned cur_beat = 0;
    struct RBeat {  // fixed size: no allocation on a cycle
        uint32_t data[(ENGINE_WORD_BYTES + 3) / 4];
        unsigned id, resp;
        bool last;
    };
    std::deque<RBeat> r_queue;
    bool r_valid = false;
    RBeat r_drive;

    // activations (AxiStreamSource, byte_lanes = 1: one beat a vector chunk)
    unsigned x_words = 0;
    std::vector<uint32_t> x_data;  // x_words a beat
    std::vector<uint8_t> x_flags;  // bit 0 tlast, bit 1 tuser
    std::size_t x_pos = 0;
    bool x_valid = false;
    Pause x_pause;

    // results (AxiStreamSink, no queue limit)
    bool y_ready = false;
    Pause y_pause;
    std::vector<uint64_t> y_value, y_cycle;
    std::vector<uint8_t> y_tid, y_last;

    // host (AxiLiteMaster): AW, W and AR sources, B and R sinks
    bool aw_valid = false, w_valid = false, lar_valid = false, b_ready = false, lr_ready = false;
    bool aw_pending = false, w_pending = false, lar_pending = false;
    uint32_t aw_addr = 0, w_data = 0, lar_addr = 0;
    bool b_seen = false, lr_seen = false;
    uint32_t lr_data = 0;

    std::vector<uint32_t> scratch;
};

namespace {

void drive_inputs(Harness& h) {
    auto* t = h.top.get();
#if ENGINE_HAS_AXI
    t->m_axi___05Farready = h.ar_ready;
    t->m_axi___05Frvalid = h.r_valid;
    if (h.r_valid) {
        put(t->m_axi___05Frdata, h.r_drive.data);
        t->m_axi___05Frid = h.r_drive.id;
        t->m_axi___05Frresp = h.r_drive.resp;
        t->m_axi___05Frlast = h.r_drive.last;
    }
#endif
    t->s_axis_x___05Ftvalid = h.x_valid;
    if (h.x_valid) {
        const std::size_t i = h.x_pos - 1;
        put(t->s_axis_x___05Ftdata, &h.x_data[i * h.x_words]);
        t->s_axis_x___05Ftlast = h.x_flags[i] & 1;
        t->s_axis_x___05Ftuser = (h.x_flags[i] >> 1) & 1;
    } else {
        t->s_axis_x___05Ftlast = 0;
    }
    t->m_axis_y___05Ftready = h.y_ready;
    t->s_axil___05Fawvalid = h.aw_valid;
    t->s_axil___05Fawaddr = h.aw_addr;
    t->s_axil___05Fwvalid = h.w_valid;
    t->s_axil___05Fwdata = h.w_data;
    t->s_axil___05Fwstrb = 0xF;
    t->s_axil___05Fbready = h.b_ready;
    t->s_axil___05Farvalid = h.lar_valid;
    t->s_axil___05Faraddr = h.lar_addr;
    t->s_axil___05Frready = h.lr_ready;
}

void fill_read_queue(Harness& h) {  // AxiRamRead's _process_read, run after the edge's models
#if ENGINE_HAS_AXI
    while (h.r_queue.size() < 2) {
        if (!h.reading) {
            if (h.ar_queue.empty()) return;
            h.cur = h.ar_queue.front();
            h.ar_queue.pop_front();
            h.reading = true;
            h.cur_beat = 0;
        }
        const unsigned num_bytes = 1u << h.cur.size;
        const uint64_t addr = (h.cur.addr / num_bytes) * num_bytes + static_cast<uint64_t>(h.cur_beat) * num_bytes;
        const uint64_t word_addr = (addr / h.word_bytes) * h.word_bytes;
        Harness::RBeat beat{};
        beat.id = h.cur.id;
        beat.last = h.cur_beat + 1 == h.cur.beats;
        if (word_addr + h.word_bytes <= h.mem.size()) {
            std::memcpy(beat.data, &h.mem[word_addr], h.word_bytes);
            beat.resp = 0;
        } else {
            beat.resp = 2;  // SLVERR, zero data: what AxiRamRead answers past its memory
        }
        h.r_queue.push_back(beat);
        if (++h.cur_beat == h.cur.beats) h.reading = false;
    }
#else
    (void)h;
#endif
}

void step(Harness& h) {
    auto* t = h.top.get();
    drive_inputs(h);
    t->clk = 0;
    t->eval();
#if ENGINE_TRACE
    if (h.tracing) h.vcd->dump(10 * h.edge + 5);
#endif
    // 1. handshakes before the edge
#if ENGINE_HAS_AXI
    const bool ar_hs = t->m_axi___05Farvalid && h.ar_ready;
    ReadBurst ar{};
    if (ar_hs) {
        ar.addr = t->m_axi___05Faraddr;
        ar.beats = t->m_axi___05Farlen + 1u;
        ar.size = t->m_axi___05Farsize;
        ar.id = t->m_axi___05Farid;
        ar.burst = t->m_axi___05Farburst;
    }
    const bool r_hs = h.r_valid && t->m_axi___05Frready;
#endif
    const bool x_hs = h.x_valid && t->s_axis_x___05Ftready;
    const bool y_hs = t->m_axis_y___05Ftvalid && h.y_ready;
    const uint64_t y_value = y_hs ? low64(t->m_axis_y___05Ftdata) : 0;
    const unsigned y_tid = y_hs ? t->m_axis_y___05Ftid : 0;
    const bool y_last = y_hs && t->m_axis_y___05Ftlast;
    const bool aw_hs = h.aw_valid && t->s_axil___05Fawready;
    const bool w_hs = h.w_valid && t->s_axil___05Fwready;
    const bool b_hs = t->s_axil___05Fbvalid && h.b_ready;
    const bool lar_hs = h.lar_valid && t->s_axil___05Farready;
    const bool lr_hs = t->s_axil___05Frvalid && h.lr_ready;
    const uint32_t lr_data = t->s_axil___05Frdata;
    t->clk = 1;
    t->eval();
    ++h.edge;
#if ENGINE_TRACE
    if (h.vcd) {
        if (!h.tracing && h.edge >= h.trace_from && h.edge <= h.trace_to) {
            h.vcd->open(h.trace_path.c_str());
            h.tracing = true;
        }
        if (h.tracing) {
            h.vcd->dump(10 * h.edge);
            if (h.edge >= h.trace_to) {
                h.vcd->close();
                h.vcd.reset();
                h.tracing = false;
            }
        }
    }
#endif
    // 2. pause generators
    h.ar_pause.advance();
    h.r_pause.advance();
    h.x_pause.advance();
    h.y_pause.advance();
    if (!h.running) return;
    // 3. the models at this edge
#if ENGINE_HAS_AXI
    if (ar_hs) h.ar_queue.push_back(ar);
    h.ar_ready = !(h.ar_queue.size() >= 2 || h.ar_pause.before());
    if (r_hs || !h.r_valid) {
        if (!h.r_queue.empty() && !h.r_pause.now()) {
            h.r_drive = h.r_queue.front();
            h.r_queue.pop_front();
            h.r_valid = true;
        } else {
            h.r_valid = false;
        }
    }
#endif
    if (x_hs || !h.x_valid) {
        if (h.x_pos < h.x_flags.size() && !h.x_pause.now()) {
            ++h.x_pos;
            h.x_valid = true;
        } else {
            h.x_valid = false;
        }
    }
    if (y_hs) {
        h.y_value.push_back(y_value);
        h.y_tid.push_back(static_cast<uint8_t>(y_tid));
        h.y_last.push_back(y_last);
        h.y_cycle.push_back(h.edge);
    }
    h.y_ready = !h.y_pause.before();
    if (aw_hs || !h.aw_valid) {
        h.aw_valid = h.aw_pending;
        h.aw_pending = false;
    }
    if (w_hs || !h.w_valid) {
        h.w_valid = h.w_pending;
        h.w_pending = false;
    }
    if (lar_hs || !h.lar_valid) {
        h.lar_valid = h.lar_pending;
        h.lar_pending = false;
    }
    if (b_hs) h.b_seen = true;
    if (lr_hs) {
        h.lr_seen = true;
        h.lr_data = lr_data;
    }
    h.b_ready = true;
    h.lr_ready = true;
    // 4. the woken coroutines
    fill_read_queue(h);
}

}  // namespace

extern "C" {

Harness* ptqtp_new(const char* trace_path, uint64_t trace_from, uint64_t trace_to) {
    auto* h = new Harness;
    h->ctx.reset(new VerilatedContext);
    h->top.reset(new ENGINE_TOP_CLASS(h->ctx.get()));
#if ENGINE_TRACE
    if (trace_path && *trace_path) {
        h->ctx->traceEverOn(true);
        h->vcd.reset(new VerilatedVcdC);
        h->top->trace(h->vcd.get(), 99);
        h->vcd->set_time_unit("1ns");
        h->vcd->set_time_resolution("1ns");
        h->trace_path = trace_path;
        h->trace_from = trace_from;
        h->trace_to = trace_to;
    }
#else
    (void)trace_path;
    (void)trace_from;
    (void)trace_to;
#endif
#if ENGINE_HAS_AXI
    h->word_bytes = ENGINE_WORD_BYTES;
#endif
    h->x_words = ENGINE_X_WORDS;
    return h;
}

void ptqtp_free(Harness* h) {
    if (!h) return;
    h->top->final();
#if ENGINE_TRACE
    if (h->vcd && h->tracing) h->vcd->close();
#endif
    delete h;
}

// The memory: `size` bytes (at least the image; reads past it answer SLVERR), `data` at 0.
void ptqtp_memory(Harness* h, const uint8_t* data, uint64_t len, uint64_t size) {
    h->mem.assign(size, 0);
    std::memcpy(h->mem.data(), data, len);
}

// Throttling as the bench's Bench.__init__: memory pauses, AR latency, stream back-pressure.
void ptqtp_throttle(Harness* h, double mem_busy, int mem_period, int mem_latency, double stall, uint64_t seed) {
    h->r_pause = Pause(mem_busy, mem_period, seed);
    h->ar_pause = mem_latency ? Pause(1.0 - 1.0 / mem_latency, mem_latency, seed) : Pause();
    h->x_pause = Pause(stall, 0, seed + 1);
    h->y_pause = Pause(stall, 0, seed + 2);
}

// Reset as the bench's Bench.reset: 4 edges in reset, then the models start; 2 more edges.
void ptqtp_reset(Harness* h) {
    h->running = false;
    h->ar_queue.clear();
    h->r_queue.clear();
    h->reading = false;
    h->ar_ready = h->r_valid = h->x_valid = h->y_ready = false;
    h->aw_valid = h->w_valid = h->lar_valid = h->b_ready = h->lr_ready = false;
    h->aw_pending = h->w_pending = h->lar_pending = false;
    h->top->rst = 1;
    for (int i = 0; i < 4; ++i) step(*h);
    h->top->rst = 0;
    h->running = true;
    for (int i = 0; i < 2; ++i) step(*h);
}

void ptqtp_idle(Harness* h, uint64_t cycles) {
    for (uint64_t i = 0; i < cycles; ++i) step(*h);
}

// One AXI4-Lite access; returns 0, or -1 when no response came within `limit` cycles.
int ptqtp_write(Harness* h, uint32_t word, uint32_t value, uint64_t limit) {
    h->aw_pending = h->w_pending = true;
    h->aw_addr = 4 * word;
    h->w_data = value;
    h->b_seen = false;
    for (uint64_t i = 0; !h->b_seen; ++i) {
        if (i >= limit) return -1;
        step(*h);
    }
    return 0;
}

int ptqtp_read(Harness* h, uint32_t word, uint32_t* value, uint64_t limit) {
    h->lar_pending = true;
    h->lar_addr = 4 * word;
    h->lr_seen = false;
    for (uint64_t i = 0; !h->lr_seen; ++i) {
        if (i >= limit) return -1;
        step(*h);
    }
    *value = h->lr_data;
    return 0;
}

// Queue `beats` activation beats (x_words 32-bit words each; flags bit 0 tlast, bit 1 tuser).
void ptqtp_push(Harness* h, const uint32_t* words, const uint8_t* flags, uint64_t beats) {
    const std::size_t done = h->x_valid ? h->x_pos - 1 : h->x_pos;  // keep the beat on the bus
    if (done > 0) {
        h->x_data.erase(h->x_data.begin(), h->x_data.begin() + done * h->x_words);
        h->x_flags.erase(h->x_flags.begin(), h->x_flags.begin() + done);
        h->x_pos -= done;
    }
    h->x_data.insert(h->x_data.end(), words, words + beats * h->x_words);
    h->x_flags.insert(h->x_flags.end(), flags, flags + beats);
}

// Run until `count` result beats have arrived in all; stop early after `idle` cycles without
// a new result (a stuck engine). Returns the count.
uint64_t ptqtp_run_until(Harness* h, uint64_t count, uint64_t idle) {
    std::size_t seen = h->y_value.size();
    for (uint64_t quiet = 0; h->y_value.size() < count && quiet < idle; ++quiet) {
        step(*h);
        if (h->y_value.size() != seen) {
            seen = h->y_value.size();
            quiet = 0;
        }
    }
    return h->y_value.size();
}

uint64_t ptqtp_cycle(Harness* h) { return h->edge; }

// Copy out and forget the result beats received so far; returns how many.
uint64_t ptqtp_take(Harness* h, uint64_t* values, uint8_t* tids, uint8_t* lasts, uint64_t* cycles, uint64_t max) {
    const uint64_t n = std::min<uint64_t>(max, h->y_value.size());
    std::memcpy(values, h->y_value.data(), n * 8);
    std::memcpy(tids, h->y_tid.data(), n);
    std::memcpy(lasts, h->y_last.data(), n);
    std::memcpy(cycles, h->y_cycle.data(), n * 8);
    h->y_value.erase(h->y_value.begin(), h->y_value.begin() + n);
    h->y_tid.erase(h->y_tid.begin(), h->y_tid.begin() + n);
    h->y_last.erase(h->y_last.begin(), h->y_last.begin() + n);
    h->y_cycle.erase(h->y_cycle.begin(), h->y_cycle.begin() + n);
    return n;
}

uint64_t ptqtp_pending(Harness* h) { return h->y_value.size(); }

// The first `n` values of random.Random(seed).random(), for the tests.
void ptqtp_py_random(uint64_t seed, double* out, uint64_t n) {
    PyRandom r(seed);
    for (uint64_t i = 0; i < n; ++i) out[i] = r.random();
}

}  // extern "C"
