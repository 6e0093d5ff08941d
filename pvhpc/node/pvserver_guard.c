/* pvhpc's guard for a parallel session's pvserver ranks, loaded into them with LD_PRELOAD by
 * pvhpc/node/parallel.py (built by `pvhpc runtime install`, runtime.py; Linux and glibc only).
 *
 * Every user of a compute node can read every process's command line (ps, /proc/<pid>/cmdline), but not
 * its environment (/proc/<pid>/environ is its owner's). ParaView 5.11's pvserver takes its connect id only
 * from argv, and listens on every interface. So the ranks are started as
 *
 *     MPI-LAUNCHER pvserver ... --server-port=P --connect-id=@PVHPC_CONNECT_ID@
 *
 * with PVHPC_CONNECT_ID (the id), PVHPC_GUARD_EXE (pvserver's real path) and PVHPC_GUARD_PORT (P) in their
 * environment, and in the process whose executable is PVHPC_GUARD_EXE (not the MPI launcher, srun or an
 * MPI daemon, which hand argv on as it is) this library
 *
 * 1. before main() runs, points each argv entry holding the placeholder at a copy with the id in its place:
 *    pvserver reads the real id while the kernel, which shows the original argument area, keeps showing
 *    the placeholder to everyone; then it takes its variables and LD_PRELOAD out of the environment;
 * 2. takes on port P only a connection from this node's loopback whose other end is a socket of this
 *    process's own user (looked up in /proc/net/tcp and tcp6): any other is closed at once, before
 *    ParaView reads a byte from it, and accept() fails with ECONNABORTED, after which ParaView waits for
 *    the next client. Without this, another user who connects first and sends nothing holds pvserver in
 *    its handshake and the session never starts. Every other socket (MPI's own) is left alone.
 *
 * Anything wrong with what it was given ends the process, with the reason on stderr: a pvserver must not
 * run with a placeholder for its id.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <unistd.h>

#define ID_ENV "PVHPC_CONNECT_ID"
#define EXE_ENV "PVHPC_GUARD_EXE"
#define PORT_ENV "PVHPC_GUARD_PORT"
#define PLACEHOLDER "@PVHPC_CONNECT_ID@"
#define TCP_TIME_WAIT 6

static int guarded_port; /* 0: this process is not the session's pvserver, and nothing is checked */

static void refuse_to_run(const char *why)
{
    fprintf(stderr, "pvhpc pvserver guard: %s\n", why);
    fflush(stderr);
    _exit(70);
}

/* arg with every placeholder replaced by value, on the heap; NULL when arg holds none. */
static char *filled(const char *arg, const char *value)
{
    size_t count = 0, plen = strlen(PLACEHOLDER), vlen = strlen(value);
    for (const char *p = strstr(arg, PLACEHOLDER); p; p = strstr(p + plen, PLACEHOLDER))
        count++;
    if (count == 0)
        return NULL;
    char *out = malloc(strlen(arg) - count * plen + count * vlen + 1);
    if (!out)
        refuse_to_run("out of memory");
    char *w = out;
    const char *r = arg;
    for (const char *p = strstr(r, PLACEHOLDER); p; p = strstr(r, PLACEHOLDER)) {
        memcpy(w, r, (size_t)(p - r));
        w += p - r;
        memcpy(w, value, vlen);
        w += vlen;
        r = p + plen;
    }
    strcpy(w, r);
    return out;
}

/* glibc calls the functions of .init_array with main's own argc, argv and envp. */
static void pvhpc_guard_init(int argc, char **argv, char **envp)
{
    (void)envp;
    const char *wanted = getenv(EXE_ENV);
    if (!wanted || !*wanted)
        return;
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0)
        return;
    exe[n] = '\0';
    if (strcmp(exe, wanted) != 0)
        return; /* the MPI launcher, srun, an MPI daemon: they pass the placeholder on untouched */

    const char *id = getenv(ID_ENV), *port = getenv(PORT_ENV);
    if (!id || !*id || strspn(id, "0123456789") != strlen(id) || strlen(id) > 10)
        refuse_to_run(ID_ENV " is not set to a connect id (a number)");
    char *end = NULL;
    long p = port ? strtol(port, &end, 10) : 0;
    if (!port || !*port || *end || p < 1 || p > 65535)
        refuse_to_run(PORT_ENV " is not set to a port");
    int replaced = 0;
    for (int i = 1; i < argc; i++) {
        char *arg = filled(argv[i], id);
        if (arg) {
            argv[i] = arg;
            replaced++;
        }
    }
    if (!replaced)
        refuse_to_run("no argument holds " PLACEHOLDER ": the connect id would not reach pvserver");
    guarded_port = (int)p;
    unsetenv(ID_ENV);
    unsetenv(EXE_ENV);
    unsetenv(PORT_ENV);
    unsetenv("LD_PRELOAD");
}

__attribute__((section(".init_array"), used)) static void (*pvhpc_guard_init_entry)(int, char **, char **) =
    pvhpc_guard_init;

/* An address as 16 bytes (IPv4 as ::ffff:a.b.c.d) and its port; 0 if it is neither family. */
static int normalized(const struct sockaddr_storage *a, unsigned char out[16], unsigned *port)
{
    if (a->ss_family == AF_INET) {
        const struct sockaddr_in *v4 = (const struct sockaddr_in *)a;
        memset(out, 0, 10);
        out[10] = out[11] = 0xff;
        memcpy(out + 12, &v4->sin_addr, 4);
        *port = ntohs(v4->sin_port);
        return 1;
    }
    if (a->ss_family == AF_INET6) {
        const struct sockaddr_in6 *v6 = (const struct sockaddr_in6 *)a;
        memcpy(out, &v6->sin6_addr, 16);
        *port = ntohs(v6->sin6_port);
        return 1;
    }
    return 0;
}

static int loopback(const unsigned char a[16])
{
    static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    static const unsigned char one[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
    return (memcmp(a, mapped, 12) == 0 && a[12] == 127) || memcmp(a, one, 16) == 0;
}

/* /proc/net/tcp's hex address (the kernel prints each 32-bit word as it lies in memory) as 16 bytes. */
static int parsed(const char *hex, unsigned char out[16])
{
    size_t len = strlen(hex);
    if (len != 8 && len != 32)
        return 0;
    unsigned char raw[16];
    for (size_t w = 0; w < len / 8; w++) {
        char word[9];
        memcpy(word, hex + 8 * w, 8);
        word[8] = '\0';
        uint32_t v = (uint32_t)strtoul(word, NULL, 16);
        memcpy(raw + 4 * w, &v, 4);
    }
    if (len == 8) {
        memset(out, 0, 10);
        out[10] = out[11] = 0xff;
        memcpy(out + 12, raw, 4);
    } else {
        memcpy(out, raw, 16);
    }
    return 1;
}

/* The owner of the socket whose local end is (a, ap) and remote end (b, bp): the client's. */
static int owner_of(const unsigned char a[16], unsigned ap, const unsigned char b[16], unsigned bp, uid_t *uid)
{
    static const char *tables[] = {"/proc/net/tcp", "/proc/net/tcp6"};
    char line[512], lhex[33], rhex[33];
    unsigned lport, rport, state, owner;
    unsigned char l[16], r[16];
    for (size_t t = 0; t < sizeof tables / sizeof *tables; t++) {
        FILE *f = fopen(tables[t], "re");
        if (!f)
            continue;
        while (fgets(line, sizeof line, f)) {
            if (sscanf(line, " %*u: %32[0-9A-Fa-f]:%x %32[0-9A-Fa-f]:%x %x %*x:%*x %*x:%*x %*x %u", lhex, &lport,
                       rhex, &rport, &state, &owner) != 6)
                continue;
            if (state == TCP_TIME_WAIT || lport != ap || rport != bp || !parsed(lhex, l) || !parsed(rhex, r))
                continue;
            if (memcmp(l, a, 16) == 0 && memcmp(r, b, 16) == 0) {
                fclose(f);
                *uid = (uid_t)owner;
                return 1;
            }
        }
        fclose(f);
    }
    return 0;
}

static int on_guarded_port(int listener)
{
    struct sockaddr_storage self;
    socklen_t len = sizeof self;
    unsigned char addr[16];
    unsigned port;
    return guarded_port && getsockname(listener, (struct sockaddr *)&self, &len) == 0 &&
           normalized(&self, addr, &port) && port == (unsigned)guarded_port;
}

/* Whether the connection fd came from this user on this node. */
static int ours(int fd)
{
    struct sockaddr_storage self, peer;
    socklen_t slen = sizeof self, plen = sizeof peer;
    unsigned char s[16], p[16];
    unsigned sport, pport;
    uid_t owner;
    if (getsockname(fd, (struct sockaddr *)&self, &slen) != 0 || getpeername(fd, (struct sockaddr *)&peer, &plen) != 0)
        return 0;
    if (!normalized(&self, s, &sport) || !normalized(&peer, p, &pport) || !loopback(p))
        return 0;
    return owner_of(p, pport, s, sport, &owner) && owner == getuid();
}

static int checked(int fd)
{
    if (fd < 0 || ours(fd))
        return fd;
    fprintf(stderr, "pvhpc pvserver guard: refused a connection on port %d: not from this node's loopback by "
                    "this user\n", guarded_port);
    fflush(stderr);
    close(fd);
    errno = ECONNABORTED;
    return -1;
}

int accept(int listener, struct sockaddr *addr, socklen_t *len)
{
    static int (*next)(int, struct sockaddr *, socklen_t *);
    if (!next)
        next = (int (*)(int, struct sockaddr *, socklen_t *))dlsym(RTLD_NEXT, "accept");
    if (!next) {   /* no libc beneath to pass it on to: refuse rather than call through nothing */
        errno = ENOSYS;
        return -1;
    }
    int fd = next(listener, addr, len);
    return on_guarded_port(listener) ? checked(fd) : fd;
}

int accept4(int listener, struct sockaddr *addr, socklen_t *len, int flags)
{
    static int (*next)(int, struct sockaddr *, socklen_t *, int);
    if (!next)
        next = (int (*)(int, struct sockaddr *, socklen_t *, int))dlsym(RTLD_NEXT, "accept4");
    if (!next) {   /* no libc beneath to pass it on to: refuse rather than call through nothing */
        errno = ENOSYS;
        return -1;
    }
    int fd = next(listener, addr, len, flags);
    return on_guarded_port(listener) ? checked(fd) : fd;
}
