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
#define MAX_STATE_DIR 4000 /* bytes; NodeLayout's MAX_STATE_DIR */
#ifndef DEFAULT_STATE_DIR
#error "DEFAULT_STATE_DIR must be defined (vnetctl install compiles in NodeLayout's default)"
#endif
#ifndef SOCKET_NAME
#error "SOCKET_NAME must be defined"
#endif

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

/* Scan the object at p for "stateDir" (into top) and "ipam"."stateDir" (into nested).
 * *tfound / *nfound: 1 a string, 0 absent or null, -1 not a string. Later keys win, as in
 * Python's json. Returns 0, or -1 when the document is not a JSON object. */
static int find_state_dirs(char *top, int *tfound, char *nested, int *nfound, size_t outlen, int depth) {
    skip_ws();
    if (p >= end || *p != '{') return -1;
    p++;
    skip_ws();
    if (p < end && *p == '}') { p++; return 0; }
    for (;;) {
        skip_ws();
        char key[16];
        const char *ks = p;
        long klen = scan_string(key, sizeof key);
        if (klen >= 0 && strlen(key) != (size_t)klen) klen = 0; /* held a NUL: no key of ours */
        if (klen < 0) {  /* a long key: not one we look for */
            p = ks;
            if (scan_string(NULL, 0) < 0) return -1;
            key[0] = '\0';
            klen = 0;
        }
        skip_ws();
        if (p >= end || *p != ':') return -1;
        p++;
        skip_ws();
        if (klen == 8 && memcmp(key, "stateDir", 9) == 0) {
            *tfound = take_string(top, outlen);
            if (*tfound < 0) {
                if (!skip_value(depth + 1)) return -1;
            }
        } else if (nested && klen == 4 && memcmp(key, "ipam", 5) == 0) {
            if (p < end && *p == '{') {
                int unused = 0;
                *nfound = 0;
                if (find_state_dirs(nested, nfound, NULL, &unused, outlen, depth + 1) < 0) return -1;
            } else {
                *nfound = 0; /* an "ipam" that is no object holds no stateDir */
                if (!skip_value(depth + 1)) return -1;
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

/* The state directory this call uses, by NodeLayout's rule. 0 ok; else -1 with *why set. */
static int state_dir_for(const char *conf, size_t len, char *dir, size_t dirlen, const char **why) {
    char top[MAX_STATE_DIR + 1], nested[MAX_STATE_DIR + 1];
    int tfound = 0, nfound = 0;
    p = conf;
    end = conf + len;
    if (!valid_utf8((const unsigned char *)conf, len)) {
        *why = "the network configuration is not valid UTF-8";
        return -1;
    }
    if (find_state_dirs(top, &tfound, nested, &nfound, sizeof top, 0) < 0) {
        *why = "the network configuration is not a JSON object";
        return -1;
    }
    skip_ws();
    if (p != end) { *why = "the network configuration is not a JSON object"; return -1; }
    int ipam_first = strcmp(PLUGIN, "vnet-ipam") == 0;
    const char *v = NULL;
    int f1 = ipam_first ? nfound : tfound, f2 = ipam_first ? tfound : nfound;
    const char *v1 = ipam_first ? nested : top, *v2 = ipam_first ? top : nested;
    const char *w1 = ipam_first ? "ipam.stateDir" : "stateDir", *w2 = ipam_first ? "stateDir" : "ipam.stateDir";
    const char *where = NULL;
    if (f1) { v = v1; where = w1; if (f1 < 0) v = NULL; }
    else if (f2) { v = v2; where = w2; if (f2 < 0) v = NULL; }
    else v = DEFAULT_STATE_DIR;
    if (!v || v[0] != '/') {
        static char msg[128];
        snprintf(msg, sizeof msg, "%s must be an absolute path", where ? where : "stateDir");
        *why = msg;
        return -1;
    }
    if (strlen(v) >= dirlen) { *why = "stateDir is too long"; return -1; }
    strcpy(dir, v);
    normalise(dir);
    return 0;
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

/* The socket path for a state directory, as os.path.join builds it. */
static int socket_path(const char *dir, char *out, size_t outlen) {
    size_t n = strlen(dir);
    int w = snprintf(out, outlen, "%s%s%s", dir, n && dir[n - 1] == '/' ? "" : "/", SOCKET_NAME);
    return w >= 0 && (size_t)w < outlen;
}

int main(int argc, char **argv) {
    read_stdin();
    char dir[MAX_STATE_DIR + 1];
    const char *why = NULL;
    int layout = input_len <= MAX_STDIN ? state_dir_for(input, input_len, dir, sizeof dir, &why) : -1;

    if (argc == 2 && strcmp(argv[1], "--socket-path") == 0) {
        /* What this front door would connect to for this configuration (the parity test). */
        char path[MAX_STATE_DIR + sizeof SOCKET_NAME + 2];
        if (layout < 0 || !socket_path(dir, path, sizeof path)) {
            printf("error: %s\n", why ? why : "the network configuration is too large");
            return 1;
        }
        printf("%s\n", path);
        return 0;
    }
    if (layout < 0) fallback(); /* malformed or unusual: the Python side reports it */

    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    if (!socket_path(dir, addr.sun_path, sizeof addr.sun_path)) fallback();
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
