/* tls_bio: what approach (B) of issue 18 would save over (A), measured on OpenSSL alone.
 *
 * Role: a TLS 1.3 echo between two SSL objects in one process (no sockets), the server side
 * driven in one of two ways, so that the per-message cost of each can be counted (callgrind)
 * and timed (natively):
 *
 *   mem  - as CPython's ssl.SSLObject does (approach A): the received ciphertext is written
 *          into a memory BIO (MemoryBIO.write), SSL_read_ex decrypts from it into the
 *          plaintext "bytes" (oxloop's read(len, buffer)), SSL_write_ex encrypts the echo
 *          into the outgoing memory BIO, and BIO_read copies that into a new buffer
 *          (MemoryBIO.read's bytes object) which the socket would send.
 *   own  - as approach B would: a BIO of our own whose read takes the ciphertext straight
 *          from the caller's receive buffer and whose write appends the records to the
 *          caller's send buffer.
 *   sink - as `own`, but the write callback hands each record on at once (a BIO that calls
 *          send() itself): no copy of the outgoing records in user space.
 *
 * The SSL objects are set up as CPython's _ssl sets up an SSLObject on OpenSSL 3
 * (Modules/_ssl.c: SSL_MODE_RELEASE_BUFFERS on the context, SSL_MODE_AUTO_RETRY and
 * SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER on the SSL, SSL_OP_NO_COMPRESSION, default TLS 1.3
 * cipher suites: TLS_AES_256_GCM_SHA384), and memory BIOs as _ssl.MemoryBIO makes them
 * (BIO_s_mem with BIO_set_mem_eof_return(-1)).
 *
 * Only the server's work is counted: under callgrind, collection is switched on around the
 * server's steps (CALLGRIND_TOGGLE_COLLECT; run with --collect-atstart=no); natively, the
 * server's steps are timed with the thread's CPU clock around each message (the machine's
 * other load does not count, its effect on the caches does). The "kernel's" copies (the
 * server's send reaching the client) are left out of both.
 *
 *   tls_bio MODE SIZE MESSAGES  -> prints: mode size messages total_ns ns_per_message cipher
 *
 * benches/tls_bio/Makefile builds it and runs the table (`make -C benches/tls_bio run`,
 * `make -C benches/tls_bio callgrind`); not part of CI.
 */
#define _GNU_SOURCE
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <valgrind/callgrind.h>

enum mode { MEM, OWN, SINK };

static void die(const char *what) {
    fprintf(stderr, "tls_bio: %s\n", what);
    ERR_print_errors_fp(stderr);
    exit(1);
}

/* A caller-owned byte buffer: the transport's receive buffer or its send buffer. */
struct cbuf {
    unsigned char *data;
    size_t len; /* bytes held */
    size_t off; /* bytes already consumed */
    size_t cap;
};

static void cbuf_init(struct cbuf *b, size_t cap) {
    b->data = malloc(cap);
    if (!b->data) die("malloc");
    b->len = b->off = 0;
    b->cap = cap;
}

/* ---- approach B's BIO: reads from / writes to struct cbuf's the caller owns ---- */

struct own_bio {
    struct cbuf *in;  /* ciphertext received, not yet given to OpenSSL */
    struct cbuf *out; /* records to send (OWN) */
    struct cbuf *sink; /* SINK: where the "socket" delivers each record (the client's input) */
    int sink_mode;
};

static int own_read(BIO *b, char *buf, size_t len, size_t *got) {
    struct own_bio *o = BIO_get_data(b);
    size_t avail = o->in->len - o->in->off;
    BIO_clear_retry_flags(b);
    if (avail == 0) {
        BIO_set_retry_read(b);
        *got = 0;
        return 0;
    }
    if (len > avail) len = avail;
    memcpy(buf, o->in->data + o->in->off, len);
    o->in->off += len;
    *got = len;
    return 1;
}

static void deliver(struct cbuf *to, const char *buf, size_t len);

static int own_write(BIO *b, const char *buf, size_t len, size_t *written) {
    struct own_bio *o = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    if (o->sink_mode) {
        /* As send() from the callback: the kernel's copy, not ours (not counted). */
        CALLGRIND_TOGGLE_COLLECT;
        deliver(o->sink, buf, len);
        CALLGRIND_TOGGLE_COLLECT;
    } else {
        struct cbuf *out = o->out;
        if (out->len + len > out->cap) die("send buffer full");
        memcpy(out->data + out->len, buf, len);
        out->len += len;
    }
    *written = len;
    return 1;
}

static long own_ctrl(BIO *b, int cmd, long num, void *ptr) {
    (void)num;
    (void)ptr;
    struct own_bio *o = BIO_get_data(b);
    switch (cmd) {
    case BIO_CTRL_FLUSH:
        return 1;
    case BIO_CTRL_PENDING:
        return o ? (long)(o->in->len - o->in->off) : 0;
    case BIO_CTRL_WPENDING:
        return 0;
    default:
        return 0;
    }
}

static int own_create(BIO *b) {
    BIO_set_init(b, 1);
    return 1;
}

static BIO_METHOD *own_method(void) {
    static BIO_METHOD *m;
    if (!m) {
        m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "caller buffers");
        if (!m) die("BIO_meth_new");
        BIO_meth_set_read_ex(m, own_read);
        BIO_meth_set_write_ex(m, own_write);
        BIO_meth_set_ctrl(m, own_ctrl);
        BIO_meth_set_create(m, own_create);
    }
    return m;
}

/* ---- certificates, contexts ---- */

static void make_cert(EVP_PKEY **key, X509 **cert) {
    *key = EVP_EC_gen("P-256");
    if (!*key) die("EVP_EC_gen");
    X509 *x = X509_new();
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), 0);
    X509_gmtime_adj(X509_getm_notAfter(x), 86400);
    X509_set_pubkey(x, *key);
    X509_NAME *name = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"localhost", -1,
                               -1, 0);
    X509_set_issuer_name(x, name);
    if (!X509_sign(x, *key, EVP_sha256())) die("X509_sign");
    *cert = x;
}

/* As _ssl.c's _SSLContext.__new__ on OpenSSL 3 (the parts that touch the data path). */
static SSL_CTX *make_ctx(int server, EVP_PKEY *key, X509 *cert) {
    SSL_CTX *ctx = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
    if (!ctx) die("SSL_CTX_new");
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_CIPHER_SERVER_PREFERENCE |
                                 SSL_OP_SINGLE_DH_USE | SSL_OP_SINGLE_ECDH_USE);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
    if (server) {
        if (SSL_CTX_use_certificate(ctx, cert) != 1) die("use_certificate");
        if (SSL_CTX_use_PrivateKey(ctx, key) != 1) die("use_PrivateKey");
    } else {
        X509_STORE_add_cert(SSL_CTX_get_cert_store(ctx), cert);
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    }
    return ctx;
}

static BIO *mem_bio(void) {
    BIO *b = BIO_new(BIO_s_mem());
    if (!b) die("BIO_new");
    BIO_set_mem_eof_return(b, -1); /* _ssl.MemoryBIO: a read of an empty BIO wants more */
    return b;
}

/* ---- the two ends ---- */

static enum mode g_mode;
static SSL *srv, *cli;
static BIO *srv_in, *srv_out;        /* MEM: the server's memory BIOs */
static BIO *cli_in, *cli_out;        /* the client's memory BIOs (always) */
static struct cbuf recvbuf, sendbuf; /* OWN/SINK: the server transport's buffers */
static struct own_bio own;

/* The "network": bytes the server sends reach the client's incoming BIO. */
static void deliver(struct cbuf *to, const char *buf, size_t len) {
    (void)to;
    if (BIO_write(cli_in, buf, (int)len) != (int)len) die("deliver");
}

/* Moves what the client's outgoing BIO holds into the server's receive buffer, as the
 * kernel's recv() would (not counted). */
static size_t client_to_server(void) {
    size_t n = (size_t)BIO_ctrl_pending(cli_out);
    if (n > recvbuf.cap) die("receive buffer too small");
    if (BIO_read(cli_out, recvbuf.data, (int)n) != (int)n) die("client BIO_read");
    recvbuf.len = n;
    recvbuf.off = 0;
    return n;
}

/* Handshake by shuttling bytes until both ends are done (not measured). */
static void handshake(void) {
    int cdone = 0, sdone = 0;
    for (int i = 0; i < 100 && !(cdone && sdone); i++) {
        if (!cdone) {
            int r = SSL_do_handshake(cli);
            if (r == 1) cdone = 1;
            else if (SSL_get_error(cli, r) != SSL_ERROR_WANT_READ) die("client handshake");
        }
        size_t n = client_to_server();
        if (g_mode == MEM && n) BIO_write(srv_in, recvbuf.data, (int)n);
        if (!sdone) {
            int r = SSL_do_handshake(srv);
            if (r == 1) sdone = 1;
            else if (SSL_get_error(srv, r) != SSL_ERROR_WANT_READ) die("server handshake");
        }
        if (g_mode == MEM) {
            char tmp[65536];
            int k;
            while ((k = BIO_read(srv_out, tmp, sizeof tmp)) > 0) BIO_write(cli_in, tmp, k);
        } else if (g_mode == OWN) {
            BIO_write(cli_in, sendbuf.data, (int)sendbuf.len);
            sendbuf.len = 0;
        }
    }
    if (!(cdone && sdone)) die("handshake did not finish");
}

/* The server's part of one echo message: what oxloop's buffer_updated + the app's write do.
 * `n` bytes of ciphertext are in recvbuf. */
static void server_echo(size_t n, size_t size) {
    /* The plaintext "bytes" object (oxloop sizes it by the ciphertext). */
    unsigned char *plain = malloc(n);
    size_t len = 0, got;
    if (g_mode == MEM) {
        /* MemoryBIO.write(view of the receive buffer) */
        if (BIO_write(srv_in, recvbuf.data, (int)n) != (int)n) die("BIO_write");
        /* read(len, buffer) until the BIO and the SSL object are empty */
        while (len < n && SSL_read_ex(srv, plain + len, n - len, &got) == 1) {
            len += got;
            if (BIO_ctrl_pending(srv_in) == 0 && SSL_pending(srv) == 0) break;
        }
    } else {
        while (len < n && SSL_read_ex(srv, plain + len, n - len, &got) == 1) {
            len += got;
            if (recvbuf.off == recvbuf.len && SSL_pending(srv) == 0) break;
        }
    }
    if (len != size) die("short read");
    /* the app's transport.write(data): SSL_write_ex, then what the BIO holds to the socket */
    if (SSL_write_ex(srv, plain, len, &got) != 1 || got != len) die("SSL_write_ex");
    free(plain);
    if (g_mode == MEM) {
        /* MemoryBIO.read(): a bytes object of BIO_ctrl_pending bytes, BIO_read into it */
        size_t pending = (size_t)BIO_ctrl_pending(srv_out);
        unsigned char *out = malloc(pending);
        if (BIO_read(srv_out, out, (int)pending) != (int)pending) die("BIO_read");
        /* transport.write(bytes) -> send(): the kernel's copy (not counted) */
        CALLGRIND_TOGGLE_COLLECT;
        deliver(NULL, (char *)out, pending);
        CALLGRIND_TOGGLE_COLLECT;
        free(out);
    } else if (g_mode == OWN) {
        CALLGRIND_TOGGLE_COLLECT;
        deliver(NULL, (char *)sendbuf.data, sendbuf.len); /* send() from the buffer */
        CALLGRIND_TOGGLE_COLLECT;
        sendbuf.len = 0;
    }
}

static double now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return t.tv_sec * 1e9 + t.tv_nsec;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: tls_bio mem|own|sink SIZE MESSAGES\n");
        return 2;
    }
    g_mode = !strcmp(argv[1], "mem") ? MEM : !strcmp(argv[1], "own") ? OWN : SINK;
    size_t size = strtoul(argv[2], NULL, 10);
    long messages = strtol(argv[3], NULL, 10);

    EVP_PKEY *key;
    X509 *cert;
    make_cert(&key, &cert);
    SSL_CTX *sctx = make_ctx(1, key, cert), *cctx = make_ctx(0, key, cert);
    srv = SSL_new(sctx);
    cli = SSL_new(cctx);
    /* _ssl.c newPySSLSocket */
    SSL_set_mode(srv, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_AUTO_RETRY);
    SSL_set_mode(cli, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_AUTO_RETRY);
    SSL_set_tlsext_host_name(cli, "localhost");
    SSL_set1_host(cli, "localhost");
    cli_in = mem_bio();
    cli_out = mem_bio();
    SSL_set_bio(cli, cli_in, cli_out);
    cbuf_init(&recvbuf, 1 << 18); /* sslproto's max_size: 256 KiB */
    cbuf_init(&sendbuf, 1 << 20);
    if (g_mode == MEM) {
        srv_in = mem_bio();
        srv_out = mem_bio();
        SSL_set_bio(srv, srv_in, srv_out);
    } else {
        BIO *b = BIO_new(own_method());
        if (!b) die("BIO_new(own)");
        own.in = &recvbuf;
        own.out = &sendbuf;
        own.sink_mode = g_mode == SINK;
        BIO_set_data(b, &own);
        SSL_set_bio(srv, b, b);
    }
    SSL_set_accept_state(srv);
    SSL_set_connect_state(cli);
    handshake();

    unsigned char *payload = malloc(size), *back = malloc(size);
    for (size_t i = 0; i < size; i++) payload[i] = (unsigned char)(i * 131 + 7);
    double total = 0;
    long warm = 20;
    for (long m = 0; m < messages + warm; m++) {
        size_t w;
        if (SSL_write_ex(cli, payload, size, &w) != 1 || w != size) die("client write");
        size_t n = client_to_server();
        double t0 = now_ns();
        if (m >= warm) CALLGRIND_TOGGLE_COLLECT;
        server_echo(n, size);
        if (m >= warm) CALLGRIND_TOGGLE_COLLECT;
        double t1 = now_ns();
        if (m >= warm) total += t1 - t0;
        size_t len = 0, got;
        while (len < size && SSL_read_ex(cli, back + len, size - len, &got) == 1) len += got;
        if (len != size || memcmp(back, payload, size)) die("echo mismatch");
    }
    printf("%s %zu %ld %.0f %.1f %s\n", argv[1], size, messages, total, total / messages,
           SSL_get_cipher_name(srv));
    return 0;
}
