// The token core at Verilator speed: one memory behind its three AXI ports (the engine's
// weight reads, the decoder's reads and writes), the host on its AXI4-Lite registers.
// Driven from Python through ctypes (ptqtp.sim.token_compiled); no Python on any cycle.
//
// Bus models: each read port takes an AR every cycle it is not stalled and answers a beat a
// cycle in order; the write port takes AW and W together and answers B the next cycle.
// Stalls: with probability `stall` a cycle holds a model's ready and valid low (seeded).
// Verilator spells a port x__y as x___05Fy (Amaranth names members <port>__<member>).
#include <verilated.h>

#include <cstdint>
#include <cstring>
#include <deque>
#include <random>
#include <vector>

#include "token_ports.h"

namespace {

struct Burst {
    uint64_t addr;
    unsigned beats;
};

template <typename W>
void put_wide(W &dst, const uint8_t *src, unsigned bytes) {
    for (unsigned i = 0; i < bytes / 4; ++i) {
        uint32_t w;
        std::memcpy(&w, src + 4 * i, 4);
        dst[i] = w;
    }
}

template <typename W>
void get_wide(const W &src, uint8_t *dst, unsigned bytes) {
    for (unsigned i = 0; i < bytes / 4; ++i) {
        uint32_t w = src[i];
        std::memcpy(dst + 4 * i, &w, 4);
    }
}

struct ReadPort {
    std::deque<Burst> queue;
    unsigned beat = 0;
};

struct Harness {
    TOKEN_TOP_CLASS top;
    std::vector<uint8_t> mem;
    uint64_t cycle = 0;
    std::mt19937_64 rng{1};
    double stall = 0.0;
    ReadPort eng, dec;
    bool b_pending = false;
    bool error = false;  // an address outside the memory

    explicit Harness(uint64_t bytes) : mem(bytes, 0) {}

    bool stalled() { return stall > 0 && std::uniform_real_distribution<double>(0, 1)(rng) < stall; }

    void beat(uint8_t *dst, uint64_t addr, unsigned bytes) {
        if (addr + bytes > mem.size()) {
            error = true;
            std::memset(dst, 0, bytes);
            return;
        }
        std::memcpy(dst, mem.data() + addr, bytes);
    }

    // one clock: drive the models' outputs, settle, sample handshakes, rising edge
    void step() {
        bool eng_ar = !stalled() && eng.queue.size() < 8;
        bool dec_ar = !stalled() && dec.queue.size() < 8;
        bool eng_r = !eng.queue.empty() && !stalled();
        bool dec_r = !dec.queue.empty() && !stalled();
        bool aw = !b_pending && !stalled();
        uint8_t buf[ENGINE_WORD_BYTES > 16 ? ENGINE_WORD_BYTES : 16];

        top.m_axi___05Farready = eng_ar;
        top.m_axi___05Frvalid = eng_r;
        if (eng_r) {
            Burst &b = eng.queue.front();
            beat(buf, b.addr + uint64_t(eng.beat) * ENGINE_WORD_BYTES, ENGINE_WORD_BYTES);
            put_wide(top.m_axi___05Frdata, buf, ENGINE_WORD_BYTES);
            top.m_axi___05Frlast = eng.beat + 1 == b.beats;
        }
        top.m_axi___05Frresp = 0;
        top.m_axi_dr___05Farready = dec_ar;
        top.m_axi_dr___05Frvalid = dec_r;
        if (dec_r) {
            Burst &b = dec.queue.front();
            beat(buf, b.addr + uint64_t(dec.beat) * 16, 16);
            put_wide(top.m_axi_dr___05Frdata, buf, 16);
            top.m_axi_dr___05Frlast = dec.beat + 1 == b.beats;
        }
        top.m_axi_dr___05Frresp = 0;
        top.m_axi_dw___05Fawready = aw;
        top.m_axi_dw___05Fwready = aw;
        top.m_axi_dw___05Fbvalid = b_pending;
        top.m_axi_dw___05Fbresp = 0;
        top.clk = 0;
        top.eval();

        bool ar1 = top.m_axi___05Farvalid && eng_ar, r1 = eng_r && top.m_axi___05Frready;
        bool ar2 = top.m_axi_dr___05Farvalid && dec_ar, r2 = dec_r && top.m_axi_dr___05Frready;
        bool w = top.m_axi_dw___05Fawvalid && top.m_axi_dw___05Fwvalid && aw;
        bool b = b_pending && top.m_axi_dw___05Fbready;
        Burst n1{top.m_axi___05Faraddr, unsigned(top.m_axi___05Farlen) + 1};
        Burst n2{top.m_axi_dr___05Faraddr, unsigned(top.m_axi_dr___05Farlen) + 1};
        if (w) {
            uint64_t at = top.m_axi_dw___05Fawaddr;
            get_wide(top.m_axi_dw___05Fwdata, buf, 16);
            if (at + 16 > mem.size())
                error = true;
            else
                std::memcpy(mem.data() + at, buf, 16);
        }
        top.clk = 1;
        top.eval();
        ++cycle;

        if (r1 && ++eng.beat == eng.queue.front().beats) {
            eng.queue.pop_front();
            eng.beat = 0;
        }
        if (r2 && ++dec.beat == dec.queue.front().beats) {
            dec.queue.pop_front();
            dec.beat = 0;
        }
        if (ar1) eng.queue.push_back(n1);
        if (ar2) dec.queue.push_back(n2);
        if (b) b_pending = false;
        if (w) b_pending = true;
    }
};

// Clock until `done()` (sampled on the settled design before an edge) holds, that edge
// included; false after `limit` cycles in all (`n` counts across calls).
template <typename F>
bool clock_until(Harness *h, F done, uint64_t &n, uint64_t limit) {
    for (;;) {
        h->top.clk = 0;
        h->top.eval();
        bool ok = done();
        h->step();
        if (ok) return true;
        if (++n > limit) return false;
    }
}

}  // namespace

extern "C" {

void *tk_new(uint64_t bytes) {
    auto *h = new Harness(bytes);
    h->top.rst = 1;
    for (int i = 0; i < 4; ++i) h->step();
    h->top.rst = 0;
    h->step();
    return h;
}

void tk_free(void *p) { delete static_cast<Harness *>(p); }

void tk_stall(void *p, double stall, uint64_t seed) {
    auto *h = static_cast<Harness *>(p);
    h->stall = stall;
    h->rng.seed(seed);
}

int tk_memory(void *p, uint8_t *data, uint64_t offset, uint64_t len, int write) {
    auto *h = static_cast<Harness *>(p);
    if (offset + len > h->mem.size()) return -1;
    if (write)
        std::memcpy(h->mem.data() + offset, data, len);
    else
        std::memcpy(data, h->mem.data() + offset, len);
    return 0;
}

uint64_t tk_cycle(void *p) { return static_cast<Harness *>(p)->cycle; }
int tk_error(void *p) { return static_cast<Harness *>(p)->error; }

// AXI4-Lite: 0 on success, -1 when the core did not answer within `limit` cycles
int tk_write(void *p, uint32_t reg, uint32_t value, uint64_t limit) {
    auto *h = static_cast<Harness *>(p);
    auto &t = h->top;
    t.s_axil___05Fawaddr = reg * 4;
    t.s_axil___05Fwdata = value;
    t.s_axil___05Fwstrb = 0xF;
    t.s_axil___05Fawvalid = 1;
    t.s_axil___05Fwvalid = 1;
    t.s_axil___05Fbready = 0;
    uint64_t n = 0;
    if (!clock_until(h, [&] { return bool(t.s_axil___05Fawready); }, n, limit)) return -1;
    t.s_axil___05Fawvalid = 0;
    t.s_axil___05Fwvalid = 0;
    t.s_axil___05Fbready = 1;
    if (!clock_until(h, [&] { return bool(t.s_axil___05Fbvalid); }, n, limit)) return -1;
    t.s_axil___05Fbready = 0;
    return 0;
}

int tk_read(void *p, uint32_t reg, uint32_t *value, uint64_t limit) {
    auto *h = static_cast<Harness *>(p);
    auto &t = h->top;
    t.s_axil___05Faraddr = reg * 4;
    t.s_axil___05Farvalid = 1;
    t.s_axil___05Frready = 0;
    uint64_t n = 0;
    if (!clock_until(h, [&] { return bool(t.s_axil___05Farready); }, n, limit)) return -1;
    t.s_axil___05Farvalid = 0;
    t.s_axil___05Frready = 1;
    auto got = [&] {
        *value = t.s_axil___05Frdata;
        return bool(t.s_axil___05Frvalid);
    };
    if (!clock_until(h, got, n, limit)) return -1;
    t.s_axil___05Frready = 0;
    return 0;
}

// clock until STATUS.busy (bit 0) clears, polling every `poll` cycles; cycles run, or
// UINT64_MAX past `limit`
uint64_t tk_wait(void *p, uint64_t poll, uint64_t limit) {
    auto *h = static_cast<Harness *>(p);
    uint64_t start = h->cycle;
    for (;;) {
        for (uint64_t i = 0; i < poll; ++i) h->step();
        uint32_t status = 0;
        if (tk_read(p, 2, &status, 1000) < 0) return UINT64_MAX;
        if (!(status & 1)) return h->cycle - start;
        if (h->cycle - start > limit) return UINT64_MAX;
    }
}
}
