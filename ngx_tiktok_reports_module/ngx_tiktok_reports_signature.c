
/*
 * Copyright (C) ngx_tiktok_reports_module authors
 */


/*
 * HMAC over the raw body with OpenSSL 3's EVP_MAC.  Each secret is keyed
 * once at configuration time into a template context; a request duplicates
 * the templates (which copies the precomputed inner and outer pads, so no
 * fetch and no key schedule per request) and streams the body through all
 * of them.  Every candidate is compared with every MAC in constant time,
 * without an early exit, so the time does not tell which secret matched.
 *
 * Not thread-safe per object; the configuration is read-only after setup.
 */


#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/params.h>

#include "ngx_tiktok_reports_signature.h"


/* the header promises at least this much room for a reason */
#define NGX_TIKTOK_REPORTS_SIG_ERRLEN     128

/* bits that tell the two base64 alphabets apart */
#define NGX_TIKTOK_REPORTS_SIG_B64_STD    0x100
#define NGX_TIKTOK_REPORTS_SIG_B64_URL    0x200

/* Standard Webhooks v1 is HMAC-SHA256 */
#define NGX_TIKTOK_REPORTS_SIG_V1_LEN     32


typedef unsigned char
    ngx_tiktok_reports_sig_mac_t[NGX_TIKTOK_REPORTS_SIG_MAX_DIGEST];


typedef struct {
    const char                     *name;
    const char                     *ossl;
    size_t                          len;
} ngx_tiktok_reports_sig_digest_t;


struct ngx_tiktok_reports_sig_conf_s {
    int                             mode;
    size_t                          digest_len;
    const char                     *md;
    EVP_MAC                        *mac;
    size_t                          nkeys;
    EVP_MAC_CTX                    *keyed[NGX_TIKTOK_REPORTS_SIG_MAX_KEYS];
};


struct ngx_tiktok_reports_sig_s {
    ngx_tiktok_reports_sig_conf_t  *conf;
    size_t                          nctx;
    int                             done;
    EVP_MAC_CTX                    *ctx[NGX_TIKTOK_REPORTS_SIG_MAX_KEYS];
};


static int ngx_tiktok_reports_sig_add_key(ngx_tiktok_reports_sig_conf_t *sc,
    const unsigned char *key, size_t len, char *err);
static void ngx_tiktok_reports_sig_ossl_error(char *err, const char *what);
static int ngx_tiktok_reports_sig_match(ngx_tiktok_reports_sig_mac_t *macs,
    size_t n, const unsigned char *cand, size_t len);
static int ngx_tiktok_reports_sig_verify_standard(
    ngx_tiktok_reports_sig_mac_t *macs, size_t n, const unsigned char *header,
    size_t len);
static const unsigned char *ngx_tiktok_reports_sig_skip_scheme(
    const unsigned char *p, const unsigned char *end);
static const unsigned char *ngx_tiktok_reports_sig_skip_algorithm(
    const unsigned char *p, const unsigned char *end);
static int ngx_tiktok_reports_sig_prefix(const unsigned char *p,
    const unsigned char *end, const char *lit, size_t len);
static int ngx_tiktok_reports_sig_hex(const unsigned char *in, size_t len,
    unsigned char *out);
static int ngx_tiktok_reports_sig_base64(const unsigned char *in, size_t len,
    unsigned char *out, size_t out_size, size_t *out_len, int strict);
static int ngx_tiktok_reports_sig_b64_value(unsigned char c);


static const ngx_tiktok_reports_sig_digest_t  ngx_tiktok_reports_sig_digests[] =
{
    { "md5",    "MD5",    16 },
    { "sha1",   "SHA1",   20 },
    { "sha224", "SHA224", 28 },
    { "sha256", "SHA256", 32 },
    { "sha384", "SHA384", 48 },
    { "sha512", "SHA512", 64 },
    { NULL, NULL, 0 }
};

#define NGX_TIKTOK_REPORTS_SIG_SHA256  3


/* only these words count as "algorithm=": a base64 digest may hold "=" */

static const char  *ngx_tiktok_reports_sig_algorithms[] = {
    "md5", "sha1", "sha-1", "sha224", "sha256", "sha384", "sha512", NULL
};


ngx_tiktok_reports_sig_conf_t *
ngx_tiktok_reports_sig_conf_create(int mode, const char *digest, char *err)
{
    size_t                                  len;
    EVP_MAC_CTX                            *probe;
    const unsigned char                    *name;
    OSSL_PARAM                              params[2];
    ngx_tiktok_reports_sig_conf_t          *sc;
    const ngx_tiktok_reports_sig_digest_t  *d;

    static const unsigned char  probe_key[1] = { 0 };

    if (mode == NGX_TIKTOK_REPORTS_SIG_STANDARD) {
        d = &ngx_tiktok_reports_sig_digests[NGX_TIKTOK_REPORTS_SIG_SHA256];

    } else if (mode == NGX_TIKTOK_REPORTS_SIG_HMAC) {
        if (digest == NULL || digest[0] == '\0') {
            snprintf(err, NGX_TIKTOK_REPORTS_SIG_ERRLEN, "no digest given");
            return NULL;
        }

        name = (const unsigned char *) digest;
        len = strlen(digest);

        for (d = ngx_tiktok_reports_sig_digests; d->name; d++) {
            if (strlen(d->name) == len
                && ngx_tiktok_reports_sig_prefix(name, name + len, d->name,
                                                 len))
            {
                break;
            }
        }

        if (d->name == NULL) {
            snprintf(err, NGX_TIKTOK_REPORTS_SIG_ERRLEN,
                     "unknown digest \"%s\" (use md5, sha1, sha224, sha256, "
                     "sha384 or sha512)", digest);
            return NULL;
        }

    } else {
        snprintf(err, NGX_TIKTOK_REPORTS_SIG_ERRLEN,
                 "unknown signature mode %d", mode);
        return NULL;
    }

    sc = calloc(1, sizeof(ngx_tiktok_reports_sig_conf_t));
    if (sc == NULL) {
        snprintf(err, NGX_TIKTOK_REPORTS_SIG_ERRLEN, "out of memory");
        return NULL;
    }

    sc->mode = mode;
    sc->digest_len = d->len;
    sc->md = d->ossl;

    sc->mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    if (sc->mac == NULL) {
        ngx_tiktok_reports_sig_ossl_error(err, "EVP_MAC_fetch(\"HMAC\")");
        free(sc);
        return NULL;
    }

    /* fail here, not at the first secret, if the digest is unavailable */

    probe = EVP_MAC_CTX_new(sc->mac);
    if (probe == NULL) {
        ngx_tiktok_reports_sig_ossl_error(err, "EVP_MAC_CTX_new()");
        ngx_tiktok_reports_sig_conf_free(sc);
        return NULL;
    }

    params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST,
                                                 (char *) d->ossl, 0);
    params[1] = OSSL_PARAM_construct_end();

    if (!EVP_MAC_init(probe, probe_key, sizeof(probe_key), params)
        || EVP_MAC_CTX_get_mac_size(probe) != d->len)
    {
        EVP_MAC_CTX_free(probe);
        snprintf(err, NGX_TIKTOK_REPORTS_SIG_ERRLEN,
                 "digest \"%s\" is not available in OpenSSL", d->name);
        ERR_clear_error();
        ngx_tiktok_reports_sig_conf_free(sc);
        return NULL;
    }

    EVP_MAC_CTX_free(probe);

    return sc;
}


int
ngx_tiktok_reports_sig_conf_add_secret(ngx_tiktok_reports_sig_conf_t *sc,
    const unsigned char *secret, size_t len, char *err)
{
    int             rc;
    size_t          n, klen;
    unsigned char  *key;

    if (sc->nkeys == NGX_TIKTOK_REPORTS_SIG_MAX_KEYS) {
        snprintf(err, NGX_TIKTOK_REPORTS_SIG_ERRLEN,
                 "too many secrets (at most %d)",
                 NGX_TIKTOK_REPORTS_SIG_MAX_KEYS);
        return -1;
    }

    if (len == 0) {
        snprintf(err, NGX_TIKTOK_REPORTS_SIG_ERRLEN, "empty secret");
        return -1;
    }

    if (sc->mode == NGX_TIKTOK_REPORTS_SIG_HMAC) {
        return ngx_tiktok_reports_sig_add_key(sc, secret, len, err);
    }

    if (len <= sizeof("whsec_") - 1
        || memcmp(secret, "whsec_", sizeof("whsec_") - 1) != 0)
    {
        goto invalid;
    }

    n = len - (sizeof("whsec_") - 1);

    key = malloc(n);
    if (key == NULL) {
        snprintf(err, NGX_TIKTOK_REPORTS_SIG_ERRLEN, "out of memory");
        return -1;
    }

    if (ngx_tiktok_reports_sig_base64(secret + sizeof("whsec_") - 1, n, key, n,
                                      &klen, 0)
        != 0
        || klen == 0)
    {
        OPENSSL_cleanse(key, n);
        free(key);
        goto invalid;
    }

    rc = ngx_tiktok_reports_sig_add_key(sc, key, klen, err);

    OPENSSL_cleanse(key, n);
    free(key);

    return rc;

invalid:

    snprintf(err, NGX_TIKTOK_REPORTS_SIG_ERRLEN,
             "secret must be \"whsec_\" followed by base64");
    return -1;
}


static int
ngx_tiktok_reports_sig_add_key(ngx_tiktok_reports_sig_conf_t *sc,
    const unsigned char *key, size_t len, char *err)
{
    EVP_MAC_CTX  *ctx;
    OSSL_PARAM    params[2];

    ctx = EVP_MAC_CTX_new(sc->mac);
    if (ctx == NULL) {
        ngx_tiktok_reports_sig_ossl_error(err, "EVP_MAC_CTX_new()");
        return -1;
    }

    params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST,
                                                 (char *) sc->md, 0);
    params[1] = OSSL_PARAM_construct_end();

    /* the provider keeps its own copy of the key and clears it on free */

    if (!EVP_MAC_init(ctx, key, len, params)) {
        EVP_MAC_CTX_free(ctx);
        ngx_tiktok_reports_sig_ossl_error(err, "EVP_MAC_init()");
        return -1;
    }

    sc->keyed[sc->nkeys++] = ctx;

    return 0;
}


void
ngx_tiktok_reports_sig_conf_free(ngx_tiktok_reports_sig_conf_t *sc)
{
    size_t  i;

    if (sc == NULL) {
        return;
    }

    for (i = 0; i < sc->nkeys; i++) {
        EVP_MAC_CTX_free(sc->keyed[i]);
    }

    EVP_MAC_free(sc->mac);

    OPENSSL_cleanse(sc, sizeof(ngx_tiktok_reports_sig_conf_t));
    free(sc);
}


ngx_tiktok_reports_sig_t *
ngx_tiktok_reports_sig_begin(ngx_tiktok_reports_sig_conf_t *sc,
    const unsigned char *prefix, size_t prefix_len)
{
    size_t                     i;
    ngx_tiktok_reports_sig_t  *s;

    s = malloc(sizeof(ngx_tiktok_reports_sig_t));
    if (s == NULL) {
        return NULL;
    }

    s->conf = sc;
    s->nctx = 0;
    s->done = 0;

    for (i = 0; i < sc->nkeys; i++) {
        s->ctx[i] = EVP_MAC_CTX_dup(sc->keyed[i]);
        if (s->ctx[i] == NULL) {
            ngx_tiktok_reports_sig_free(s);
            ERR_clear_error();
            return NULL;
        }

        s->nctx++;
    }

    if (prefix_len && ngx_tiktok_reports_sig_update(s, prefix, prefix_len)) {
        ngx_tiktok_reports_sig_free(s);
        return NULL;
    }

    return s;
}


int
ngx_tiktok_reports_sig_update(ngx_tiktok_reports_sig_t *s,
    const unsigned char *data, size_t len)
{
    size_t  i;

    if (s->done) {
        return -1;
    }

    if (len == 0) {
        return 0;
    }

    for (i = 0; i < s->nctx; i++) {
        if (!EVP_MAC_update(s->ctx[i], data, len)) {
            /* leave nothing in the queue for nginx's own SSL calls */
            ERR_clear_error();
            return -1;
        }
    }

    return 0;
}


int
ngx_tiktok_reports_sig_verify(ngx_tiktok_reports_sig_t *s,
    const unsigned char *header, size_t len)
{
    int                             ok, match;
    size_t                          i, n, dl, olen;
    unsigned char                   cand[NGX_TIKTOK_REPORTS_SIG_MAX_DIGEST];
    ngx_tiktok_reports_sig_mac_t    macs[NGX_TIKTOK_REPORTS_SIG_MAX_KEYS];
    ngx_tiktok_reports_sig_conf_t  *sc;

    /* one verdict per check: the contexts are finished after this */

    if (s == NULL || s->done) {
        return 0;
    }

    s->done = 1;

    sc = s->conf;
    dl = sc->digest_len;
    n = s->nctx;
    ok = 1;

    for (i = 0; i < n; i++) {
        if (!EVP_MAC_final(s->ctx[i], macs[i], &olen, sizeof(macs[i]))
            || olen != dl)
        {
            ok = 0;
        }

        EVP_MAC_CTX_free(s->ctx[i]);
        s->ctx[i] = NULL;
    }

    if (!ok) {
        ERR_clear_error();
        match = 0;

    } else if (sc->mode == NGX_TIKTOK_REPORTS_SIG_HMAC) {
        match = ngx_tiktok_reports_sig_parse_hmac_header(header, len, dl, cand)
                && ngx_tiktok_reports_sig_match(macs, n, cand, dl);

    } else {
        match = ngx_tiktok_reports_sig_verify_standard(macs, n, header, len);
    }

    OPENSSL_cleanse(macs, n * sizeof(macs[0]));

    return match;
}


void
ngx_tiktok_reports_sig_free(ngx_tiktok_reports_sig_t *s)
{
    size_t  i;

    if (s == NULL) {
        return;
    }

    for (i = 0; i < s->nctx; i++) {
        EVP_MAC_CTX_free(s->ctx[i]);
    }

    free(s);
}


/* OR of all comparisons, no early exit */

static int
ngx_tiktok_reports_sig_match(ngx_tiktok_reports_sig_mac_t *macs, size_t n,
    const unsigned char *cand, size_t len)
{
    int     match;
    size_t  i;

    match = 0;

    for (i = 0; i < n; i++) {
        match |= (CRYPTO_memcmp(macs[i], cand, len) == 0);
    }

    return match;
}


/* "v1,<base64> v1a,<base64> ...": other versions and bad entries skipped */

static int
ngx_tiktok_reports_sig_verify_standard(ngx_tiktok_reports_sig_mac_t *macs,
    size_t n, const unsigned char *header, size_t len)
{
    int                   match;
    size_t                olen;
    unsigned char         sig[NGX_TIKTOK_REPORTS_SIG_V1_LEN];
    const unsigned char  *p, *end, *tok;

    if (len == 0) {
        return 0;
    }

    match = 0;
    p = header;
    end = header + len;

    while (p < end) {

        if (*p == ' ' || *p == '\t') {
            p++;
            continue;
        }

        tok = p;

        while (p < end && *p != ' ' && *p != '\t') {
            p++;
        }

        if (p - tok < 3 || tok[0] != 'v' || tok[1] != '1' || tok[2] != ',') {
            continue;
        }

        if (ngx_tiktok_reports_sig_base64(tok + 3, p - tok - 3, sig,
                                          sizeof(sig), &olen, 1)
            != 0
            || olen != sizeof(sig))
        {
            continue;
        }

        match |= ngx_tiktok_reports_sig_match(macs, n, sig, sizeof(sig));
    }

    return match;
}


int
ngx_tiktok_reports_sig_parse_hmac_header(const unsigned char *v,
    size_t len, size_t digest_len, unsigned char *out)
{
    size_t                olen;
    const unsigned char  *p, *end;

    if (len == 0 || digest_len == 0
        || digest_len > NGX_TIKTOK_REPORTS_SIG_MAX_DIGEST)
    {
        return 0;
    }

    p = v;
    end = v + len;

    while (p < end && (*p == ' ' || *p == '\t')) {
        p++;
    }

    while (end > p && (end[-1] == ' ' || end[-1] == '\t')) {
        end--;
    }

    /* "HMAC sha256=<digest>": the scheme word, then the algorithm */

    p = ngx_tiktok_reports_sig_skip_scheme(p, end);
    p = ngx_tiktok_reports_sig_skip_algorithm(p, end);

    if ((size_t) (end - p) == 2 * digest_len
        && ngx_tiktok_reports_sig_hex(p, end - p, out) == 0)
    {
        return 1;
    }

    /* the size limit also turns away anything longer than a digest */

    if (ngx_tiktok_reports_sig_base64(p, end - p, out, digest_len, &olen, 0)
        != 0
        || olen != digest_len)
    {
        return 0;
    }

    return 1;
}


/* [A-Za-z][A-Za-z0-9_-]* and one or more spaces */

static const unsigned char *
ngx_tiktok_reports_sig_skip_scheme(const unsigned char *p,
    const unsigned char *end)
{
    unsigned char         c;
    const unsigned char  *q;

    if (p == end || !((*p | 0x20) >= 'a' && (*p | 0x20) <= 'z')) {
        return p;
    }

    for (q = p + 1; q < end; q++) {
        c = *q;

        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
              || (c >= '0' && c <= '9') || c == '_' || c == '-'))
        {
            break;
        }
    }

    if (q == end || *q != ' ') {
        return p;
    }

    while (q < end && *q == ' ') {
        q++;
    }

    return q;
}


/* [hmac-|hmac]?(md5|sha1|sha-1|sha224|sha256|sha384|sha512)= */

static const unsigned char *
ngx_tiktok_reports_sig_skip_algorithm(const unsigned char *p,
    const unsigned char *end)
{
    size_t                n;
    const char          **name;
    const unsigned char  *q;

    q = p;

    if (ngx_tiktok_reports_sig_prefix(q, end, "hmac-", 5)) {
        q += 5;

    } else if (ngx_tiktok_reports_sig_prefix(q, end, "hmac", 4)) {
        q += 4;
    }

    for (name = ngx_tiktok_reports_sig_algorithms; *name; name++) {
        n = strlen(*name);

        if ((size_t) (end - q) > n
            && q[n] == '='
            && ngx_tiktok_reports_sig_prefix(q, end, *name, n))
        {
            return q + n + 1;
        }
    }

    return p;
}


/* case-insensitive; lit is lowercase */

static int
ngx_tiktok_reports_sig_prefix(const unsigned char *p,
    const unsigned char *end, const char *lit, size_t len)
{
    size_t         i;
    unsigned char  c;

    if ((size_t) (end - p) < len) {
        return 0;
    }

    for (i = 0; i < len; i++) {
        c = p[i];

        if (c >= 'A' && c <= 'Z') {
            c |= 0x20;
        }

        if (c != (unsigned char) lit[i]) {
            return 0;
        }
    }

    return 1;
}


static int
ngx_tiktok_reports_sig_hex(const unsigned char *in, size_t len,
    unsigned char *out)
{
    size_t         i;
    unsigned char  c, v, b;

    b = 0;

    for (i = 0; i < len; i++) {
        c = in[i];

        if (c >= '0' && c <= '9') {
            v = c - '0';

        } else {
            c |= 0x20;

            if (c >= 'a' && c <= 'f') {
                v = c - 'a' + 10;

            } else {
                return -1;
            }
        }

        if (i & 1) {
            out[i / 2] = (unsigned char) (b << 4 | v);

        } else {
            b = v;
        }
    }

    return 0;
}


int
ngx_tiktok_reports_sig_decode_base64(const unsigned char *in, size_t len,
    unsigned char *out, size_t out_size, size_t *out_len)
{
    return ngx_tiktok_reports_sig_base64(in, len, out, out_size, out_len, 0);
}


/*
 * strict: the standard alphabet with padding, as the Standard Webhooks
 * libraries write it.  Otherwise either alphabet (not both in one value)
 * and padding optional.  Unused trailing bits must be zero in both cases,
 * so that every digest has one spelling only.
 */

static int
ngx_tiktok_reports_sig_base64(const unsigned char *in, size_t len,
    unsigned char *out, size_t out_size, size_t *out_len, int strict)
{
    int       v, seen;
    size_t    i, n, pad, need, o;
    uint32_t  acc, bits;

    n = len;
    pad = 0;

    while (n > 0 && pad < 2 && in[n - 1] == '=') {
        n--;
        pad++;
    }

    if (pad) {
        if (n % 4 != 4 - pad) {
            return -1;
        }

    } else if (n % 4 == 1 || (strict && n % 4 != 0)) {
        return -1;
    }

    need = n / 4 * 3 + (n % 4 ? n % 4 - 1 : 0);

    if (need > out_size) {
        return -1;
    }

    seen = 0;
    acc = 0;
    bits = 0;
    o = 0;

    for (i = 0; i < n; i++) {
        v = ngx_tiktok_reports_sig_b64_value(in[i]);
        if (v < 0) {
            return -1;
        }

        seen |= v;
        acc = (acc << 6) | (v & 0x3f);
        bits += 6;

        if (bits >= 8) {
            bits -= 8;
            out[o++] = (unsigned char) (acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }

    if (acc != 0) {
        return -1;
    }

    if ((seen & NGX_TIKTOK_REPORTS_SIG_B64_URL)
        && (strict || (seen & NGX_TIKTOK_REPORTS_SIG_B64_STD)))
    {
        return -1;
    }

    *out_len = o;

    return 0;
}


/* 0..63, with a bit marking the characters of one alphabet only; -1 */

static int
ngx_tiktok_reports_sig_b64_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z') {
        return c - 'A';
    }

    if (c >= 'a' && c <= 'z') {
        return c - 'a' + 26;
    }

    if (c >= '0' && c <= '9') {
        return c - '0' + 52;
    }

    switch (c) {

    case '+':
        return 62 | NGX_TIKTOK_REPORTS_SIG_B64_STD;

    case '/':
        return 63 | NGX_TIKTOK_REPORTS_SIG_B64_STD;

    case '-':
        return 62 | NGX_TIKTOK_REPORTS_SIG_B64_URL;

    case '_':
        return 63 | NGX_TIKTOK_REPORTS_SIG_B64_URL;

    default:
        return -1;
    }
}


/* the reason goes to nginx's log; the queue is left empty */

static void
ngx_tiktok_reports_sig_ossl_error(char *err, const char *what)
{
    unsigned long   e;
    const char     *reason;

    e = ERR_peek_last_error();
    reason = e ? ERR_reason_error_string(e) : NULL;

    if (reason) {
        snprintf(err, NGX_TIKTOK_REPORTS_SIG_ERRLEN, "%s failed (%s)", what,
                 reason);

    } else if (e) {
        snprintf(err, NGX_TIKTOK_REPORTS_SIG_ERRLEN,
                 "%s failed (OpenSSL error %lx)", what, e);

    } else {
        snprintf(err, NGX_TIKTOK_REPORTS_SIG_ERRLEN, "%s failed", what);
    }

    ERR_clear_error();
}
