// nixproc-demo-webapp: the demo's web application, like nix-processmgmt's example webapp: an HTTP
// server that answers every request with a static HTML page naming the port it listens on.
//   nixproc-demo-webapp --port PORT
// One process, one thread, blocking accept: a demo, not a server to copy.
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <netinet/in.h>
#include <string>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char** argv) {
    int port = 0;
    for (int i = 1; i + 1 < argc; ++i)
        if (std::strcmp(argv[i], "--port") == 0) port = std::atoi(argv[i + 1]);
    if (port <= 0 || port > 65535) {
        std::fprintf(stderr, "usage: nixproc-demo-webapp --port PORT\n");
        return 2;
    }
    std::signal(SIGPIPE, SIG_IGN);
    int server = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int yes = 1;
    ::setsockopt(server, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(static_cast<uint16_t>(port));
    if (::bind(server, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || ::listen(server, 64) != 0) {
        std::perror("nixproc-demo-webapp: bind/listen");
        return 1;
    }
    std::printf("webapp listening on port %d\n", port);
    std::fflush(stdout);
    const std::string body = "<!DOCTYPE html>\n<html>\n  <head>\n    <title>Simple test webapp</title>\n  </head>\n"
                             "  <body>\n    Simple test webapp listening on port: " + std::to_string(port) +
                             "\n  </body>\n</html>\n";
    const std::string response = "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: " +
                                 std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body;
    for (;;) {
        int client = ::accept4(server, nullptr, nullptr, SOCK_CLOEXEC);
        if (client < 0) continue;
        char request[4096];
        ssize_t got = ::recv(client, request, sizeof request, 0); // the request line and headers
        if (got > 0) {
            ssize_t sent = ::send(client, response.data(), response.size(), 0);
            (void)sent;
        }
        ::close(client);
    }
}
