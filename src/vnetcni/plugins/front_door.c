/*
 * vnet-cni front door: the executable kubelet runs for `vnet` and `vnet-ipam`.
 *
 * It forwards the call (CNI_* environment + stdin) to the node's vnetd over the Unix socket
 * <stateDir>/vnetd.sock and relays vnetd's answer (stdout + exit code). When no vnetd listens,
 * it hands the call to the Python plugin (same handlers, in-process) by exec, with stdin
 * replayed from a memfd. Wire format: src/vnetcni/daemon/protocol.py.
 *
 * Built by `vnetctl install` with: cc -O2 -DPLUGIN='"vnet"' -DFALLBACK='"/path/to/python-entry"'
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#ifndef PLUGIN
#error "PLUGIN must be defined"
#endif
#ifndef FALLBACK
#error "FALLBACK must be defined"
#endif

#define MAX_STDIN (1 << 20)
#define DEFAULT_STATE_DIR "/var/run/vnet"

extern char **environ;

static char *input;
static size_t input_len;
static int daemon_tried; /* vnetd was asked (or is not listening): the Python entry need not ask again */

static void read_stdin(void) {
    size_t cap = 8192;
    input = malloc(cap + 1);
    if (!input) exit(1);
    for (;;) {
        if (input_len == cap) {
            if (cap > MAX_STDIN) break; /* oversized: the Python side reports it */
            cap *= 2;
            input = realloc(input, cap + 1);
            if (!input) exit(1);
        }
        ssize_t n = read(0, input + input_len, cap - input_len);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        input_len += (size_t)n;
    }
    input[input_len] = '\0';
}

/* Hand the call to the Python plugin: stdin replayed from a memfd. Never returns. */
static void fallback(void) {
    int fd = memfd_create("vnet-stdin", 0);
    if (fd >= 0) {
        size_t off = 0;
        while (off < input_len) {
            ssize_t n = write(fd, input + off, input_len - off);
            if (n <= 0) break;
            off += (size_t)n;
        }
        lseek(fd, 0, SEEK_SET);
        dup2(fd, 0);
        close(fd);
    }
    if (daemon_tried) setenv("VNET_FRONT_DOOR_TRIED", "1", 1);
    char *argv[] = {(char *)FALLBACK, NULL};
    execve(FALLBACK, argv, environ);
    printf("{\"cniVersion\": \"1.0.0\", \"code\": 50, \"msg\": \"cannot execute %s: %s\"}\n",
           FALLBACK, strerror(errno));
    exit(1);
}

/* --- a tiny JSON scanner: find "stateDir" at the top level, else inside "ipam" ---------- */
static const char *p, *end;

static void skip_ws(void) { while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) p++; }

/* Scan a string at p (p at the opening quote). Returns 0 on error; sets [*s, *e) to the raw
 * contents and *escaped if it held a backslash. */
static int scan_string(const char **s, const char **e, int *escaped) {
    if (p >= end || *p != '"') return 0;
    p++;
    *s = p;
    *escaped = 0;
    while (p < end && *p != '"') {
        if (*p == '\\') { *escaped = 1; p++; }
        p++;
    }
    if (p >= end) return 0;
    *e = p;
    p++;
    return 1;
}

static int skip_value(int depth);

static int skip_container(char open, char close, int depth) {
    if (depth > 64) return 0;
    p++;
    for (;;) {
        skip_ws();
        if (p >= end) return 0;
        if (*p == close) { p++; return 1; }
        if (open == '{') {
            const char *s, *e; int esc;
            if (!scan_string(&s, &e, &esc)) return 0;
            skip_ws();
            if (p >= end || *p != ':') return 0;
            p++;
        }
        if (!skip_value(depth + 1)) return 0;
        skip_ws();
        if (p < end && *p == ',') { p++; continue; }
    }
}

static int skip_value(int depth) {
    skip_ws();
    if (p >= end) return 0;
    if (*p == '{') return skip_container('{', '}', depth);
    if (*p == '[') return skip_container('[', ']', depth);
    if (*p == '"') { const char *s, *e; int esc; return scan_string(&s, &e, &esc); }
    while (p < end && *p != ',' && *p != '}' && *p != ']' && *p != ' ' && *p != '\n') p++;
    return 1;
}

/* Look for key `want` in the object at p; copy a plain string value into out. 1 found, 0 not,
 * -1 malformed or not representable (escapes, too long). With `nested`, descend into "ipam". */
static int find_key(const char *want, char *out, size_t outlen, const char *nested, char *nout, int *nfound) {
    skip_ws();
    if (p >= end || *p != '{') return -1;
    p++;
    int found = 0;
    for (;;) {
        skip_ws();
        if (p >= end) return -1;
        if (*p == '}') { p++; return found; }
        const char *ks, *ke; int kesc;
        if (!scan_string(&ks, &ke, &kesc)) return -1;
        skip_ws();
        if (p >= end || *p != ':') return -1;
        p++;
        skip_ws();
        size_t klen = (size_t)(ke - ks);
        if (!kesc && klen == strlen(want) && memcmp(ks, want, klen) == 0 && p < end && *p == '"') {
            const char *vs, *ve; int vesc;
            if (!scan_string(&vs, &ve, &vesc)) return -1;
            if (vesc || (size_t)(ve - vs) >= outlen) return -1;
            memcpy(out, vs, (size_t)(ve - vs));
            out[ve - vs] = '\0';
            found = 1;
        } else if (nested && !kesc && klen == strlen(nested) && memcmp(ks, nested, klen) == 0 && p < end && *p == '{') {
            int r = find_key(want, nout, outlen, NULL, NULL, NULL);
            if (r < 0) return -1;
            *nfound = r;
        } else if (!skip_value(1)) {
            return -1;
        }
        skip_ws();
        if (p < end && *p == ',') p++;
    }
}

static void send_all(int fd, const char *buf, size_t len) {
    while (len) {
        ssize_t n = write(fd, buf, len);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return;
        buf += n;
        len -= (size_t)n;
    }
}

static void retry_later(const char *why) {
    printf("{\"cniVersion\": \"1.0.0\", \"code\": 11, \"msg\": \"vnetd %s\", \"details\": \"retry the operation\"}\n", why);
    exit(1);
}

int main(void) {
    read_stdin();
    if (input_len > MAX_STDIN) fallback();

    char top[4096] = "", nested[4096] = "";
    int nfound = 0;
    p = input;
    end = input + input_len;
    int r = find_key("stateDir", top, sizeof top, "ipam", nested, &nfound);
    if (r < 0) fallback(); /* malformed or unusual: the Python side decides */
    const char *state_dir = r == 1 && top[0] ? top : (nfound && nested[0] ? nested : DEFAULT_STATE_DIR);

    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    if (snprintf(addr.sun_path, sizeof addr.sun_path, "%s/vnetd.sock", state_dir) >= (int)sizeof addr.sun_path)
        fallback();
    daemon_tried = 1;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) fallback();

    struct stat ns;
    if (stat("/proc/self/ns/net", &ns) != 0) fallback();
    char head[256];
    int hn = snprintf(head, sizeof head, "VNET1\n%s\n%llu:%llu\n", PLUGIN,
                      (unsigned long long)ns.st_dev, (unsigned long long)ns.st_ino);
    send_all(fd, head, (size_t)hn);
    for (char **e = environ; *e; e++) {
        if (strncmp(*e, "CNI_", 4) != 0) continue;
        if (strchr(*e, '\n')) { close(fd); fallback(); }
        send_all(fd, *e, strlen(*e));
        send_all(fd, "\n", 1);
    }
    send_all(fd, "\n", 1);
    send_all(fd, input, input_len);
    shutdown(fd, SHUT_WR);

    size_t cap = 65536, len = 0;
    char *resp = malloc(cap);
    if (!resp) exit(1);
    for (;;) {
        if (len == cap) {
            cap *= 2;
            resp = realloc(resp, cap);
            if (!resp) exit(1);
        }
        ssize_t n = read(fd, resp + len, cap - len);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) retry_later("connection lost");
        if (n == 0) break;
        len += (size_t)n;
    }
    if (len == 9 && memcmp(resp, "FALLBACK\n", 9) == 0) fallback(); /* vnetd declined: in-process */
    char *nl = memchr(resp, '\n', len);
    if (!nl) retry_later("closed the connection before answering");
    *nl = '\0';
    char *endp;
    long code = strtol(resp, &endp, 10);
    if (endp == resp || *endp) retry_later("sent a malformed answer");
    size_t off = (size_t)(nl + 1 - resp);
    fwrite(resp + off, 1, len - off, stdout);
    fflush(stdout);
    return (int)code;
}
