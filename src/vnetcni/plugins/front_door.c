/*
 * vnet-cni front door: the executable the runtime runs for `vnet` and `vnet-ipam`.
 *
 * It forwards the call (CNI_* environment + stdin) to the node's vnetd over the Unix socket the
 * node layout names (src/vnetcni/node/layout.py: <stateDir>/vnetd.sock) and relays vnetd's answer
 * (stdout + exit code). Wire format: src/vnetcni/daemon/protocol.py (version 2).
 *
 * - It opens CNI_NETNS here, in the runtime's mount namespace, and passes the descriptor to
 *   vnetd (SCM_RIGHTS): vnetd never opens a pod's namespace by path.
 * - Every wait on vnetd (connect, send, answer) has one deadline, vnetdTimeoutSeconds (default
 *   compiled in from NodeLayout), also sent to vnetd. Running out answers CNI error 11 naming
 *   vnetd and its socket. SIGPIPE is ignored: vnetd closing early is an error answer too.
 * - VERSION is answered here.
 * - Fallback build (-DFALLBACK="/path/to/python-entry", `vnetctl install` from a checkout):
 *   when no vnetd listens (or it declines), the call goes to the Python plugin (same handlers,
 *   in-process) by exec, stdin replayed from a memfd.
 * - No-fallback build (no FALLBACK, `vnetctl install --no-fallback`, plain libc, statically
 *   linkable): without vnetd, ADD/CHECK/GC fail at once with code 11, STATUS answers 50 (not
 *   ready), and DEL is recorded durably in <stateDir>/pending-deletes/ and answered with
 *   success: vnetd carries it out (veth, address, record) before it serves anything else.
 *
 * `front-door --socket-path < conf` prints "<socket> <timeout-ms>" for a configuration (the
 * parity test with NodeLayout) and exits.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#ifndef PLUGIN
#error "PLUGIN must be defined"
#endif
#if !defined(DEFAULT_STATE_DIR) || !defined(SOCKET_NAME) || !defined(DEFAULT_TIMEOUT_MS) || !defined(MAX_TIMEOUT_MS) \
    || !defined(CNI_VERSIONS) || !defined(MAX_STDIN)
#error "vnetctl install compiles in NodeLayout's defaults: DEFAULT_STATE_DIR, SOCKET_NAME, DEFAULT_TIMEOUT_MS, MAX_TIMEOUT_MS, CNI_VERSIONS, MAX_STDIN"
#endif
#define MAX_STATE_DIR 4000 /* bytes; NodeLayout's MAX_STATE_DIR */
#define TRY_AGAIN_LATER 11

extern char **environ;

static char *input;
static size_t input_len;

static void read_stdin(void) {
    size_t cap = 8192;
    input = malloc(cap + 1);
    if (!input) exit(1);
    for (;;) {
        if (input_len == cap) {
            if (cap > MAX_STDIN) break; /* oversized: refused below */
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

/* --- a tiny JSON scanner: "stateDir" at the top level and inside "ipam" -----------------
 * The rule is NodeLayout.for_plugin's (src/vnetcni/node/layout.py): the plugin's own section
 * first (top level for vnet, "ipam" for vnet-ipam), then the other, then DEFAULT_STATE_DIR;
 * null counts as absent; anything else must be an absolute path, normalised like normpath. */
static const char *p, *end;

static void skip_ws(void) { while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) p++; }

static int hex4(const char *s, unsigned *out) {
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        char c = s[i];
        v <<= 4;
        if (c >= '0' && c <= '9') v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f') v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') v |= (unsigned)(c - 'A' + 10);
        else return 0;
    }
    *out = v;
    return 1;
}

/* Scan a JSON string at p (p at the opening quote). With out, decode it (UTF-8) into out.
 * Returns the decoded length, or -1 when malformed or, when decoding, too long for out or not
 * a usable path (NUL, a lone surrogate). */
static long scan_string(char *out, size_t outlen) {
    if (p >= end || *p != '"') return -1;
    p++;
    size_t n = 0;
    while (p < end && *p != '"') {
        unsigned char buf[4];
        size_t blen = 1;
        if ((unsigned char)*p < 0x20) return -1;
        if (*p != '\\') {
            buf[0] = (unsigned char)*p++;
        } else {
            if (end - p < 2) return -1;
            char c = p[1];
            p += 2;
            switch (c) {
            case '"': case '\\': case '/': buf[0] = (unsigned char)c; break;
            case 'b': buf[0] = '\b'; break;
            case 'f': buf[0] = '\f'; break;
            case 'n': buf[0] = '\n'; break;
            case 'r': buf[0] = '\r'; break;
            case 't': buf[0] = '\t'; break;
            case 'u': {
                unsigned cp, lo;
                if (end - p < 4 || !hex4(p, &cp)) return -1;
                p += 4;
                if (cp >= 0xD800 && cp < 0xDC00 && end - p >= 6 && p[0] == '\\' && p[1] == 'u'
                    && hex4(p + 2, &lo) && lo >= 0xDC00 && lo < 0xE000) {
                    p += 6;
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                } else if (cp >= 0xD800 && cp < 0xE000 && out) {
                    return -1; /* a lone surrogate is no path */
                }
                if (cp == 0 && out) return -1;
                if (cp < 0x80) { buf[0] = (unsigned char)cp; }
                else if (cp < 0x800) { buf[0] = (unsigned char)(0xC0 | (cp >> 6)); buf[1] = (unsigned char)(0x80 | (cp & 0x3F)); blen = 2; }
                else if (cp < 0x10000) { buf[0] = (unsigned char)(0xE0 | (cp >> 12)); buf[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F)); buf[2] = (unsigned char)(0x80 | (cp & 0x3F)); blen = 3; }
                else { buf[0] = (unsigned char)(0xF0 | (cp >> 18)); buf[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F)); buf[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F)); buf[3] = (unsigned char)(0x80 | (cp & 0x3F)); blen = 4; }
                break;
            }
            default: return -1;
            }
        }
        if (out) {
            if (n + blen >= outlen) return -1;
            memcpy(out + n, buf, blen);
        }
        n += blen;
    }
    if (p >= end) return -1;
    p++;
    if (out) out[n] = '\0';
    return (long)n;
}

static int skip_value(int depth);

static int skip_container(char close, int depth) {
    if (depth > 512) return 0;
    p++;
    skip_ws();
    if (p < end && *p == close) { p++; return 1; }
    for (;;) {
        skip_ws();
        if (close == '}') {
            if (scan_string(NULL, 0) < 0) return 0;
            skip_ws();
            if (p >= end || *p != ':') return 0;
            p++;
        }
        if (!skip_value(depth + 1)) return 0;
        skip_ws();
        if (p < end && *p == ',') { p++; continue; }
        if (p < end && *p == close) { p++; return 1; }
        return 0;
    }
}

static int skip_value(int depth) {
    skip_ws();
    if (p >= end) return 0;
    if (*p == '{') return skip_container('}', depth);
    if (*p == '[') return skip_container(']', depth);
    if (*p == '"') return scan_string(NULL, 0) >= 0;
    for (const char *lit = "true\0false\0null\0"; *lit; lit += strlen(lit) + 1) {
        size_t n = strlen(lit);
        if ((size_t)(end - p) >= n && memcmp(p, lit, n) == 0) { p += n; return 1; }
    }
    /* a number: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)? (no NaN or Infinity, like Python's) */
    if (p < end && *p == '-') p++;
    if (p < end && *p == '0') p++;
    else if (p < end && *p >= '1' && *p <= '9') { while (p < end && *p >= '0' && *p <= '9') p++; }
    else return 0;
    if (p < end && *p == '.') {
        p++;
        if (p >= end || *p < '0' || *p > '9') return 0;
        while (p < end && *p >= '0' && *p <= '9') p++;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < end && (*p == '+' || *p == '-')) p++;
        if (p >= end || *p < '0' || *p > '9') return 0;
        while (p < end && *p >= '0' && *p <= '9') p++;
    }
    return 1;
}

/* Strict UTF-8 (no overlongs, surrogates or code points past U+10FFFF), as Python decodes. */
static int valid_utf8(const unsigned char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        size_t len;
        unsigned min, cp;
        if (c < 0x80) { i++; continue; }
        if (c >= 0xC2 && c <= 0xDF) { len = 2; min = 0x80; cp = c & 0x1F; }
        else if (c >= 0xE0 && c <= 0xEF) { len = 3; min = 0x800; cp = c & 0x0F; }
        else if (c >= 0xF0 && c <= 0xF4) { len = 4; min = 0x10000; cp = c & 0x07; }
        else return 0;
        if (n - i < len) return 0;
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xC0) != 0x80) return 0;
            cp = (cp << 6) | (s[i + k] & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp < 0xE000)) return 0;
        i += len;
    }
    return 1;
}

/* A key's value when the key is `want`: 1 a string (copied to out), 0 null, -1 anything else. */
static int take_string(char *out, size_t outlen) {
    const char *start = p;
    if (p < end && *p == '"') {
        if (scan_string(out, outlen) >= 0) return 1;
    } else if (end - p >= 4 && memcmp(p, "null", 4) == 0) {
        p += 4;
        return 0;
    }
    p = start; /* the caller skips the value */
    return -1;
}

/* A number token at p (JSON's grammar, checked by skip_value) into *out. The input is
 * NUL-terminated and JSON numbers are a subset of strtod's (C locale): it stops where they end. */
static int take_number(double *out) {
    const char *s = p;
    if (p >= end || (*p != '-' && (*p < '0' || *p > '9')) || !skip_value(1)) { p = s; return -1; }
    *out = strtod(s, NULL);
    return 1;
}

/* What the scanner looks for in one section (the top level, or "ipam"). */
struct section {
    char state_dir[MAX_STATE_DIR + 1];
    int state_found;   /* 1 a string, 0 absent or null, -1 anything else */
    double timeout;
    int timeout_found; /* 1 a number, 0 absent or null, -1 anything else */
};

static char net_name[MAX_STATE_DIR + 1]; /* the top-level "name" ("" when no usable string) */

/* Scan the object at p. Later keys win, as in Python's json. With ipam, also descend into
 * "ipam" (its own section) and note the top-level "cniVersion" and "name". Returns 0, or -1 when the
 * document is not a JSON object. */
static int find_keys(struct section *sec, struct section *ipam, char *version, size_t vlen, int depth) {
    skip_ws();
    if (p >= end || *p != '{') return -1;
    p++;
    skip_ws();
    if (p < end && *p == '}') { p++; return 0; }
    for (;;) {
        skip_ws();
        char key[24];
        const char *ks = p;
        long klen = scan_string(key, sizeof key);
        if (klen < 0) { /* a long key: not one we look for */
            p = ks;
            if (scan_string(NULL, 0) < 0) return -1;
            key[0] = '\0';
        }
        skip_ws();
        if (p >= end || *p != ':') return -1;
        p++;
        skip_ws();
        if (strcmp(key, "stateDir") == 0) {
            sec->state_found = take_string(sec->state_dir, sizeof sec->state_dir);
            if (sec->state_found < 0 && !skip_value(depth + 1)) return -1;
        } else if (strcmp(key, "vnetdTimeoutSeconds") == 0) {
            if (end - p >= 4 && memcmp(p, "null", 4) == 0) { p += 4; sec->timeout_found = 0; }
            else {
                sec->timeout_found = take_number(&sec->timeout);
                if (sec->timeout_found < 0 && !skip_value(depth + 1)) return -1;
            }
        } else if (version && strcmp(key, "name") == 0) {
            if (take_string(net_name, sizeof net_name) != 1) {
                net_name[0] = '\0';
                if (!skip_value(depth + 1)) return -1;
            }
        } else if (version && strcmp(key, "cniVersion") == 0) {
            if (take_string(version, vlen) != 1) {
                version[0] = '\0';
                if (!skip_value(depth + 1)) return -1;
            }
        } else if (ipam && strcmp(key, "ipam") == 0) {
            memset(ipam, 0, sizeof *ipam);  /* a later "ipam" replaces an earlier one */
            if (p < end && *p == '{') {
                if (find_keys(ipam, NULL, NULL, 0, depth + 1) < 0) return -1;
            } else if (!skip_value(depth + 1)) {
                return -1;
            }
        } else if (!skip_value(depth + 1)) {
            return -1;
        }
        skip_ws();
        if (p < end && *p == ',') { p++; continue; }
        if (p < end && *p == '}') { p++; return 0; }
        return -1;
    }
}

/* normpath for an absolute path, in place: "//" kept as POSIX allows, "." dropped, ".." up. */
static void normalise(char *path) {
    size_t len = strlen(path);
    size_t lead = (len >= 2 && path[1] == '/' && (len == 2 || path[2] != '/')) ? 2 : 1;
    char *out = path + lead;
    size_t o = 0;
    char *src = strdup(path);
    if (!src) exit(1);
    char *save = NULL;
    for (char *t = strtok_r(src, "/", &save); t; t = strtok_r(NULL, "/", &save)) {
        if (strcmp(t, ".") == 0) continue;
        if (strcmp(t, "..") == 0) {
            while (o > 0 && out[o - 1] != '/') o--;
            if (o > 0) o--;
            continue;
        }
        if (o > 0) out[o++] = '/';
        size_t tl = strlen(t);
        memcpy(out + o, t, tl);
        o += tl;
    }
    out[o] = '\0';
    free(src);
}

/* The layout this call uses, by NodeLayout.for_plugin's rule. 0 ok; else -1 with *why set
 * and *code the CNI error code (6: not a JSON object, 7: a bad key). */
struct layout {
    char state_dir[MAX_STATE_DIR + 1];
    long timeout_ms;
    char version[16]; /* the configuration's cniVersion, "" when none */
};

static struct section top_sec, ipam_sec;

static int layout_for(const char *conf, size_t len, struct layout *out, const char **why, int *code) {
    static char msg[160];
    memset(&top_sec, 0, sizeof top_sec);
    memset(&ipam_sec, 0, sizeof ipam_sec);
    out->version[0] = '\0';
    *code = 6;
    if (len > MAX_STDIN) { *why = "the network configuration is too large"; return -1; }
    if (!valid_utf8((const unsigned char *)conf, len)) { *why = "the network configuration is not valid UTF-8"; return -1; }
    p = conf;
    end = conf + len;
    if (find_keys(&top_sec, &ipam_sec, out->version, sizeof out->version, 0) < 0) {
        *why = "the network configuration is not a JSON object";
        return -1;
    }
    skip_ws();
    if (p != end) { *why = "the network configuration is not a JSON object"; return -1; }
    *code = 7;
    int ipam_first = strcmp(PLUGIN, "vnet-ipam") == 0;
    struct section *first = ipam_first ? &ipam_sec : &top_sec, *second = ipam_first ? &top_sec : &ipam_sec;
    const char *p1 = ipam_first ? "ipam." : "", *p2 = ipam_first ? "" : "ipam.";

    struct section *s = first->state_found ? first : second->state_found ? second : NULL;
    if (s == NULL) {
        strcpy(out->state_dir, DEFAULT_STATE_DIR);
    } else if (s->state_found < 0 || s->state_dir[0] != '/') {
        snprintf(msg, sizeof msg, "%sstateDir must be an absolute path", s == first ? p1 : p2);
        *why = msg;
        return -1;
    } else {
        strcpy(out->state_dir, s->state_dir);
    }
    normalise(out->state_dir);

    s = first->timeout_found ? first : second->timeout_found ? second : NULL;
    if (s == NULL) {
        out->timeout_ms = DEFAULT_TIMEOUT_MS;
    } else if (s->timeout_found < 0 || !(s->timeout > 0) || s->timeout > MAX_TIMEOUT_MS / 1000.0) {
        snprintf(msg, sizeof msg, "vnetdTimeoutSeconds must be a number of seconds in (0, %g]", MAX_TIMEOUT_MS / 1000.0);
        *why = msg;
        return -1;
    } else {
        long ms = (long)(s->timeout * 1000 + 0.5);
        out->timeout_ms = ms < 1 ? 1 : ms;
    }
    return 0;
}

/* --- answers ------------------------------------------------------------------------------ */
static char version_out[16] = "1.1.0"; /* the version errors are written in */

static void put_json_string(const char *s) {
    putchar('"');
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') printf("\\%c", c);
        else if (c < 0x20) printf("\\u%04x", c);
        else putchar(c);
    }
    putchar('"');
}

/* A CNI error object on stdout; exit 1. */
static void cni_error(int code, const char *msg, const char *details) {
    printf("{\n    \"cniVersion\": ");
    put_json_string(version_out);
    printf(",\n    \"code\": %d,\n    \"msg\": ", code);
    put_json_string(msg);
    if (details && *details) {
        printf(",\n    \"details\": ");
        put_json_string(details);
    }
    printf("\n}\n");
    fflush(stdout);
    exit(1);
}

static int supported(const char *v) {
    size_t n = strlen(v);
    for (const char *s = CNI_VERSIONS; *s;) {
        const char *e = strchr(s, ' ');
        size_t len = e ? (size_t)(e - s) : strlen(s);
        if (n && len == n && memcmp(s, v, n) == 0) return 1;
        s += len + (e ? 1 : 0);
    }
    return 0;
}

static void answer_version(const char *requested) {
    const char *latest = strrchr(CNI_VERSIONS, ' ');
    latest = latest ? latest + 1 : CNI_VERSIONS;
    printf("{\n    \"cniVersion\": \"%s\",\n    \"supportedVersions\": [", supported(requested) ? requested : latest);
    const char *s = CNI_VERSIONS;
    for (int first = 1; *s; first = 0) {
        const char *e = strchr(s, ' ');
        size_t len = e ? (size_t)(e - s) : strlen(s);
        printf("%s\n        \"%.*s\"", first ? "" : ",", (int)len, s);
        s += len + (e ? 1 : 0);
    }
    printf("\n    ]\n}\n");
    fflush(stdout);
    exit(0);
}

#ifdef FALLBACK
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
    setenv("VNET_FRONT_DOOR_TRIED", "1", 1); /* vnetd was asked: the Python entry asks no more */
    char *argv[] = {(char *)FALLBACK, NULL};
    execve(FALLBACK, argv, environ);
    char msg[512];
    snprintf(msg, sizeof msg, "cannot execute %s: %s", FALLBACK, strerror(errno));
    cni_error(50, msg, "");
}
#endif

/* --- time ---------------------------------------------------------------------------------- */
static long long now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static long long deadline_ms;

/* Wait for fd to be ready for `events` until the deadline: 1 ready, 0 out of time. */
static int wait_for(int fd, short events) {
    for (;;) {
        long long left = deadline_ms - now_ms();
        if (left <= 0) return 0;
        struct pollfd pfd = {.fd = fd, .events = events};
        int r = poll(&pfd, 1, left > 1000000 ? 1000000 : (int)left);
        if (r > 0) return 1;
        if (r < 0 && errno != EINTR) return 1; /* the next call reports the error */
    }
}

/* --- the request ----------------------------------------------------------------------------- */
struct buf { char *data; size_t len, cap; };

static void put(struct buf *b, const char *s, size_t n) {
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (b->len + n + 1 > cap) cap *= 2;
        b->data = realloc(b->data, cap);
        if (!b->data) exit(1);
        b->cap = cap;
    }
    memcpy(b->data + b->len, s, n);
    b->len += n;
}

static void puts_(struct buf *b, const char *s) { put(b, s, strlen(s)); }

/* Header + CNI_* variables + stdin. pod_netns: "" (none), "fd" or "errno:N". NULL on a
 * variable that cannot be forwarded (a newline), naming it in *bad. */
static struct buf *build_request(const char *pod_netns, long timeout_ms, const char **bad) {
    static struct buf b;
    b.len = 0;
    struct stat ns;
    char line[160];
    if (stat("/proc/self/ns/net", &ns) != 0) { *bad = "/proc/self/ns/net"; return NULL; }
    snprintf(line, sizeof line, "VNET2\nplugin=%s\nnetns=%llu:%llu\ntimeout-ms=%ld\n", PLUGIN,
             (unsigned long long)ns.st_dev, (unsigned long long)ns.st_ino, timeout_ms);
    puts_(&b, line);
    if (*pod_netns) {
        puts_(&b, "pod-netns=");
        puts_(&b, pod_netns);
        puts_(&b, "\n");
    }
    for (char **e = environ; *e; e++) {
        if (strncmp(*e, "CNI_", 4) != 0) continue;
        if (strchr(*e, '\n')) { *bad = *e; return NULL; }
        puts_(&b, *e);
        puts_(&b, "\n");
    }
    puts_(&b, "\n");
    put(&b, input, input_len);
    return &b;
}

/* Send all of buf before the deadline, the descriptor (if >= 0) with the first bytes.
 * 0 sent; 1 out of time; -1 the connection failed (errno set). */
static int send_request(int fd, const char *data, size_t len, int passfd) {
    while (len) {
        if (!wait_for(fd, POLLOUT)) return 1;
        struct iovec iov = {.iov_base = (void *)data, .iov_len = len};
        struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
        union { char buf[CMSG_SPACE(sizeof(int))]; struct cmsghdr align; } ctl;
        if (passfd >= 0) {
            memset(&ctl, 0, sizeof ctl);
            msg.msg_control = ctl.buf;
            msg.msg_controllen = sizeof ctl.buf;
            struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
            c->cmsg_level = SOL_SOCKET;
            c->cmsg_type = SCM_RIGHTS;
            c->cmsg_len = CMSG_LEN(sizeof(int));
            memcpy(CMSG_DATA(c), &passfd, sizeof(int));
        }
        ssize_t n = sendmsg(fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK) continue;
            return -1;
        }
        passfd = -1; /* it went with these bytes */
        data += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Read vnetd's answer to EOF before the deadline. 0 read; 1 out of time; -1 failed. */
static int read_answer(int fd, struct buf *out) {
    for (;;) {
        if (!wait_for(fd, POLLIN)) return 1;
        char chunk[65536];
        ssize_t n = recv(fd, chunk, sizeof chunk, MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK) continue;
            return -1;
        }
        if (n == 0) return 0;
        if (out->len > (64u << 20)) { errno = EMSGSIZE; return -1; }
        put(out, chunk, (size_t)n);
    }
}

/* --- without vnetd ------------------------------------------------------------------------- */
static char sock_path[sizeof(((struct sockaddr_un *)0)->sun_path)];
static struct layout lay;
static const char *command = "";

static unsigned long long fnv1a(unsigned long long h, const char *s, size_t n) {
    for (size_t i = 0; i < n; i++) { h ^= (unsigned char)s[i]; h *= 0x100000001b3ULL; }
    return h;
}

/* The attachment's key, as daemon/pending.py computes it. */
static unsigned long long pending_key(void) {
    const char *cid = getenv("CNI_CONTAINERID"), *ifn = getenv("CNI_IFNAME");
    unsigned long long h = 0xcbf29ce484222325ULL;
    h = fnv1a(h, PLUGIN, sizeof PLUGIN);
    h = fnv1a(h, net_name, strlen(net_name) + 1);
    h = fnv1a(h, cid ? cid : "", cid ? strlen(cid) + 1 : 1);
    return fnv1a(h, ifn ? ifn : "", ifn ? strlen(ifn) + 1 : 1);
}

#ifndef FALLBACK

/* Record this DEL in <stateDir>/pending-deletes/<key>.del (the request as vnetd would read
 * it, without a descriptor): written, fsynced and renamed into place. 0 recorded or nothing to
 * record (no state directory: nothing was ever allocated here); -1 failed (errno set). */
static int record_pending_delete(char *why, size_t whylen) {
    char dir[MAX_STATE_DIR + 64], tmp[MAX_STATE_DIR + 128], final[MAX_STATE_DIR + 128];
    snprintf(dir, sizeof dir, "%s/pending-deletes", lay.state_dir);
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        if (errno == ENOENT) { snprintf(why, whylen, "no state directory %s: nothing to release", lay.state_dir); return 0; }
        return -1;
    }
    const char *bad = NULL;
    struct buf *req = build_request("", lay.timeout_ms, &bad);
    if (!req) { errno = EINVAL; return -1; }
    unsigned long long h = pending_key();
    snprintf(final, sizeof final, "%s/%016llx.del", dir, h);
    snprintf(tmp, sizeof tmp, "%s/.%016llx.%ld.tmp", dir, h, (long)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) return -1;
    size_t off = 0;
    while (off < req->len) {
        ssize_t n = write(fd, req->data + off, req->len - off);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) { int e = errno; close(fd); unlink(tmp); errno = n == 0 ? EIO : e; return -1; }
        off += (size_t)n;
    }
    if (fsync(fd) != 0 || close(fd) != 0) { int e = errno; unlink(tmp); errno = e; return -1; }
    if (rename(tmp, final) != 0) { int e = errno; unlink(tmp); errno = e; return -1; }
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) { fsync(dfd); close(dfd); }
    snprintf(why, whylen, "recorded in %s for vnetd to carry out", final);
    return 0;
}
#endif

/* vnetd cannot take this call (not listening, out of time before anything was sent, or gone
 * before answering). Never returns. */
static void without_vnetd(const char *what, int sent) {
    char msg[1024];
    snprintf(msg, sizeof msg, "vnetd %s on %s", what, sock_path);
#ifdef FALLBACK
    if (!sent) fallback(); /* nothing reached vnetd: the call is whole in-process */
    cni_error(TRY_AGAIN_LATER, msg, "retry the operation");
#else
    (void)sent;
    if (strcmp(command, "DEL") == 0) {
        char why[MAX_STATE_DIR + 200];
        if (record_pending_delete(why, sizeof why) == 0) {
            fprintf(stderr, "%s: %s; DEL %s\n", PLUGIN, msg, why);
            exit(0);
        }
        char full[MAX_STATE_DIR + 1200];
        snprintf(full, sizeof full, "%s, and the DEL could not be recorded in %s/pending-deletes: %s",
                 msg, lay.state_dir, strerror(errno));
        cni_error(TRY_AGAIN_LATER, full, "retry the operation");
    }
    if (strcmp(command, "STATUS") == 0) cni_error(50, msg, "vnet-cni is not ready until vnetd serves");
    cni_error(TRY_AGAIN_LATER, msg, "retry the operation; vnetd is the node agent vnet-cni needs");
#endif
}

/* The socket path for a state directory, as os.path.join builds it. */
static int socket_path(const char *dir, char *out, size_t outlen) {
    size_t n = strlen(dir);
    int w = snprintf(out, outlen, "%s%s%s", dir, n && dir[n - 1] == '/' ? "" : "/", SOCKET_NAME);
    return w >= 0 && (size_t)w < outlen;
}

int main(int argc, char **argv) {
    signal(SIGPIPE, SIG_IGN); /* vnetd closing early is an error answer, not our death */
    read_stdin();
    const char *why = NULL;
    int code = 0;
    int ok = layout_for(input, input_len, &lay, &why, &code) == 0;
    if (supported(lay.version)) strcpy(version_out, lay.version);

    if (argc == 2 && strcmp(argv[1], "--socket-path") == 0) {
        char path[MAX_STATE_DIR + sizeof SOCKET_NAME + 2];
        if (!ok || !socket_path(lay.state_dir, path, sizeof path)) {
            printf("error: %s\n", why ? why : "the socket path is too long");
            return 1;
        }
        printf("%s %ld\n", path, lay.timeout_ms);
        return 0;
    }
    if (argc == 2 && strcmp(argv[1], "--pending-key") == 0) {
        printf("%016llx\n", pending_key());
        return 0;
    }
    command = getenv("CNI_COMMAND") ? getenv("CNI_COMMAND") : "";
    if (strcmp(command, "VERSION") == 0) answer_version(lay.version);
    if (!ok) {
#ifdef FALLBACK
        fallback(); /* the Python side reports it, word for word as in-process */
#else
        if (input_len > MAX_STDIN) {
            char msg[128];
            snprintf(msg, sizeof msg, "network configuration too large (more than %d bytes)", MAX_STDIN);
            cni_error(6, msg, "");
        }
        cni_error(code, why, "");
#endif
    }
    deadline_ms = now_ms() + lay.timeout_ms;
    if (!socket_path(lay.state_dir, sock_path, sizeof sock_path)) {
        snprintf(sock_path, sizeof sock_path, "%.60s...", lay.state_dir);
        without_vnetd("cannot be reached: the socket path is too long", 0);
    }

    /* The pod's namespace, opened here in the runtime's mount namespace. */
    const char *netns = getenv("CNI_NETNS");
    int nsfd = -1;
    char pod_netns[32] = "";
    if (netns && *netns) {
        nsfd = open(netns, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY); /* never blocks (a FIFO) */
        if (nsfd >= 0) strcpy(pod_netns, "fd");
        else snprintf(pod_netns, sizeof pod_netns, "errno:%d", errno);
    }
    const char *bad = NULL;
    struct buf *req = build_request(pod_netns, lay.timeout_ms, &bad);
    if (!req) {
#ifdef FALLBACK
        fallback();
#else
        char msg[256];
        snprintf(msg, sizeof msg, "cannot forward %.80s to vnetd: a newline in the environment", bad);
        cni_error(4, msg, "");
#endif
    }

    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) without_vnetd("cannot be reached: no socket", 0);
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    strcpy(addr.sun_path, sock_path);
    for (;;) { /* a Unix socket connects at once, or says EAGAIN while vnetd's backlog is full */
        if (connect(fd, (struct sockaddr *)&addr, sizeof addr) == 0) break;
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EINPROGRESS) {
            if (now_ms() >= deadline_ms) {
                char what[128];
                snprintf(what, sizeof what, "did not accept the connection within %ld ms", lay.timeout_ms);
                without_vnetd(what, 0);
            }
            struct timespec ts = {0, 5 * 1000 * 1000};
            nanosleep(&ts, NULL);
            continue;
        }
        char what[160];
        snprintf(what, sizeof what, "is not listening (%s)", strerror(errno));
        without_vnetd(what, 0);
    }

    int r = send_request(fd, req->data, req->len, nsfd);
    if (nsfd >= 0) close(nsfd);
    char what[256];
    if (r == 1) {
        snprintf(what, sizeof what, "did not take the request within %ld ms", lay.timeout_ms);
        without_vnetd(what, 1);
    }
    /* A failed send (vnetd closed early, e.g. refusing an oversized request) still reads
     * whatever vnetd answered before closing. */
    int send_errno = r < 0 ? errno : 0;
    shutdown(fd, SHUT_WR);
    struct buf resp = {0};
    r = read_answer(fd, &resp);
    close(fd);
    if (r == 1) {
        snprintf(what, sizeof what, "did not answer within %ld ms", lay.timeout_ms);
        without_vnetd(what, 1);
    }
    if (r < 0 && resp.len == 0) {
        snprintf(what, sizeof what, "connection lost (%s)", strerror(send_errno ? send_errno : errno));
        without_vnetd(what, 1);
    }
#ifdef FALLBACK
    if (resp.len == 9 && memcmp(resp.data, "FALLBACK\n", 9) == 0) fallback(); /* vnetd declined */
#else
    if (resp.len == 9 && memcmp(resp.data, "FALLBACK\n", 9) == 0)
        cni_error(TRY_AGAIN_LATER, "vnetd declined the call (it serves another network namespace or plugin)", sock_path);
#endif
    char *nl = resp.len ? memchr(resp.data, '\n', resp.len) : NULL;
    if (!nl) without_vnetd("closed the connection before answering", 1);
    *nl = '\0';
    char *endp;
    long exit_code = strtol(resp.data, &endp, 10);
    if (endp == resp.data || *endp) without_vnetd("sent a malformed answer", 1);
    size_t off = (size_t)(nl + 1 - resp.data);
    fwrite(resp.data + off, 1, resp.len - off, stdout);
    fflush(stdout);
    return (int)exit_code;
}
