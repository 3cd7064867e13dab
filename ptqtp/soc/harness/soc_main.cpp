// The SoC simulator's main: the Verilated SoC clocked as fast as it goes, its UARTBone byte
// streams joined to one TCP client on the loopback interface. The host driver speaks the
// same UARTBone protocol as to a board's serial port; only this transport differs.
//
//   soc_sim PORT_FILE [PORT]   listens on 127.0.0.1:PORT (0: any free port, the default),
//                              writes the port number to PORT_FILE, serves one client,
//                              exits when it disconnects. Prints the cycles simulated.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "Vptqtp_soc.h"
#include "verilated.h"

static const uint64_t RESET_CYCLES = 16;

static int listen_loopback(int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (sockaddr *)&a, sizeof a) || listen(fd, 1)) {
        perror("soc_sim: bind/listen");
        exit(2);
    }
    return fd;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s PORT_FILE [PORT]\n", argv[0]);
        return 2;
    }
    int lfd = listen_loopback(argc > 2 ? atoi(argv[2]) : 0);
    sockaddr_in a{};
    socklen_t len = sizeof a;
    getsockname(lfd, (sockaddr *)&a, &len);
    {
        std::string tmp = std::string(argv[1]) + ".tmp";
        FILE *f = fopen(tmp.c_str(), "w");
        fprintf(f, "%d\n", ntohs(a.sin_port));
        fclose(f);
        rename(tmp.c_str(), argv[1]);  // the host sees the whole number or nothing
    }
    int fd = accept(lfd, nullptr, nullptr);
    close(lfd);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    fcntl(fd, F_SETFL, O_NONBLOCK);

    auto ctx = std::make_unique<VerilatedContext>();
    auto top = std::make_unique<Vptqtp_soc>(ctx.get());
    std::deque<uint8_t> rx;  // host -> SoC
    std::vector<uint8_t> tx;  // SoC -> host
    uint8_t buf[65536];
    uint64_t cycle = 0;
    bool open = true;
    top->sim_trace = 0;
    top->serial_source_ready = 1;
    while (open) {
        // the socket every 64 cycles: a syscall a cycle would be most of the time spent
        if ((cycle & 63) == 0) {
            if (!tx.empty()) {
                ssize_t n = send(fd, tx.data(), tx.size(), MSG_NOSIGNAL);
                if (n > 0) tx.erase(tx.begin(), tx.begin() + n);
                else if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) open = false;
            }
            if (rx.size() < sizeof buf) {
                ssize_t n = recv(fd, buf, sizeof buf, 0);
                if (n > 0) rx.insert(rx.end(), buf, buf + n);
                else if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) open = false;
            }
        }
        top->sys_rst = cycle < RESET_CYCLES;
        // nothing enters until the reset has passed the CRG's synchroniser (bytes would be lost)
        top->serial_sink_valid = !rx.empty() && cycle >= 2 * RESET_CYCLES;
        top->serial_sink_data = rx.empty() ? 0 : rx.front();
        top->sys_clk = 0;
        top->eval();
        // sample the handshakes before the edge
        bool took = top->serial_sink_valid && top->serial_sink_ready;
        bool gave = top->serial_source_valid && top->serial_source_ready;
        uint8_t out = top->serial_source_data;
        top->sys_clk = 1;
        top->eval();
        if (took) rx.pop_front();
        if (gave) tx.push_back(out);
        cycle++;
    }
    // flush what is left for a closing client
    fcntl(fd, F_SETFL, 0);
    if (!tx.empty()) send(fd, tx.data(), tx.size(), MSG_NOSIGNAL);
    close(fd);
    top->final();
    printf("cycles %llu\n", (unsigned long long)cycle);
    return 0;
}
