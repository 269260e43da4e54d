
/*
 * Copyright (C) ngx_tiktok_reports_module authors
 */


/*
 * Unit test of ngx_tiktok_reports_signature.c, without nginx.  Expected
 * MACs are computed here with OpenSSL's one-shot EVP_Q_mac(); header
 * values are copied into buffers of their exact size, so that ASan sees
 * any read past the length.  Prints TAP; exits 0 only if all pass.
 */


#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/wait.h>

#include <openssl/evp.h>

#include "ngx_tiktok_reports_signature.h"


#define MAX_HDR  20480


typedef struct {
    const char  *name;
    const char  *ossl;
    size_t       len;
} digest_t;


static const digest_t  digests[] = {
    { "md5",    "MD5",    16 },
    { "sha1",   "SHA1",   20 },
    { "sha224", "SHA224", 28 },
    { "sha256", "SHA256", 32 },
    { "sha384", "SHA384", 48 },
    { "sha512", "SHA512", 64 },
};

#define NDIGESTS  (sizeof(digests) / sizeof(digests[0]))


static const unsigned char  body[] =
    "{\"results\":[{\"messageId\":\"ff4804ef-6ab6-4abd-984d-ab3b1387e852\","
    "\"to\":\"41793026727\",\"status\":{\"groupId\":3,\"groupName\":"
    "\"DELIVERED\",\"id\":5,\"name\":\"DELIVERED_TO_HANDSET\"}}]}\n"
    "\0binary\xff\xfe tail";

#define BODY_LEN  (sizeof(body) - 1)


static const char  *key1 = "current-secret";
static const char  *key2 = "previous-secret";
static const char  *key3 = "third-secret";

static const char  *sw_secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
static const char  *sw_prefix = "msg_p5jXN8AQM9LWM0D4loKWxJek.1614265330.";
static const char  *sw_body = "{\"test\": 2432232314}";
static const char  *sw_sig = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";


static int  ntests;
static int  nfailed;


static void
ok(int cond, const char *fmt, ...)
{
    va_list  ap;

    ntests++;

    if (!cond) {
        nfailed++;
    }

    printf("%sok %d - ", cond ? "" : "not ", ntests);

    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);

    printf("\n");
}


static void
diag(const char *fmt, ...)
{
    va_list  ap;

    printf("# ");

    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);

    printf("\n");
}


static size_t
mac(const char *md, const char *key, const unsigned char *data, size_t len,
    unsigned char *out)
{
    size_t  olen;

    if (EVP_Q_mac(NULL, "HMAC", NULL, md, NULL, key, strlen(key), data, len,
                  out, NGX_TIKTOK_REPORTS_SIG_MAX_DIGEST, &olen)
        == NULL)
    {
        diag("EVP_Q_mac(%s) failed", md);
        exit(2);
    }

    return olen;
}


static void
hex(const unsigned char *d, size_t n, int upper, char *out)
{
    size_t       i;
    const char  *digits;

    digits = upper ? "0123456789ABCDEF" : "0123456789abcdef";

    for (i = 0; i < n; i++) {
        out[2 * i] = digits[d[i] >> 4];
        out[2 * i + 1] = digits[d[i] & 0xf];
    }

    out[2 * n] = '\0';
}


/* url: the URL-safe alphabet without padding */

static void
b64(const unsigned char *d, size_t n, int url, char *out)
{
    int  len, i;

    len = EVP_EncodeBlock((unsigned char *) out, d, (int) n);

    if (!url) {
        return;
    }

    for (i = 0; i < len; i++) {
        if (out[i] == '+') {
            out[i] = '-';

        } else if (out[i] == '/') {
            out[i] = '_';
        }
    }

    while (len > 0 && out[len - 1] == '=') {
        out[--len] = '\0';
    }
}


/* one whole check; chunk 0 feeds the body at once */

static int
check_n(ngx_tiktok_reports_sig_conf_t *sc, const char *prefix,
    const unsigned char *data, size_t len, const char *hdr, size_t hlen,
    size_t chunk)
{
    int                        rc;
    size_t                     off, n;
    unsigned char             *h;
    ngx_tiktok_reports_sig_t  *s;

    s = ngx_tiktok_reports_sig_begin(sc, (const unsigned char *) prefix,
                                     prefix ? strlen(prefix) : 0);
    if (s == NULL) {
        return -2;
    }

    for (off = 0; off < len; off += n) {
        n = (chunk && chunk < len - off) ? chunk : len - off;

        if (ngx_tiktok_reports_sig_update(s, data + off, n) != 0) {
            ngx_tiktok_reports_sig_free(s);
            return -3;
        }
    }

    h = malloc(hlen ? hlen : 1);
    if (h == NULL) {
        exit(2);
    }

    memcpy(h, hdr, hlen);

    rc = ngx_tiktok_reports_sig_verify(s, h, hlen);

    free(h);
    ngx_tiktok_reports_sig_free(s);

    return rc;
}


static int
check(ngx_tiktok_reports_sig_conf_t *sc, const char *prefix,
    const unsigned char *data, size_t len, const char *hdr, size_t chunk)
{
    return check_n(sc, prefix, data, len, hdr, strlen(hdr), chunk);
}


static ngx_tiktok_reports_sig_conf_t *
conf(int mode, const char *digest, const char **secrets, size_t n)
{
    char                            err[128];
    size_t                          i;
    ngx_tiktok_reports_sig_conf_t  *sc;

    sc = ngx_tiktok_reports_sig_conf_create(mode, digest, err);
    if (sc == NULL) {
        diag("conf_create(%s): %s", digest ? digest : "NULL", err);
        exit(2);
    }

    for (i = 0; i < n; i++) {
        if (ngx_tiktok_reports_sig_conf_add_secret(sc,
                (const unsigned char *) secrets[i], strlen(secrets[i]), err)
            != 0)
        {
            diag("add_secret(%s): %s", secrets[i], err);
            exit(2);
        }
    }

    return sc;
}


/* parse a copy of exactly len bytes */

static int
parse_n(const char *v, size_t len, size_t dl, unsigned char *out)
{
    int             rc;
    unsigned char  *p;

    p = malloc(len ? len : 1);
    if (p == NULL) {
        exit(2);
    }

    memcpy(p, v, len);
    rc = ngx_tiktok_reports_sig_parse_hmac_header(p, len, dl, out);
    free(p);

    return rc;
}


static int
parse(const char *v, size_t dl, unsigned char *out)
{
    return parse_n(v, strlen(v), dl, out);
}


static int
decode(const char *v, size_t out_size, unsigned char *out, size_t *out_len)
{
    int             rc;
    size_t          len;
    unsigned char  *p;

    len = strlen(v);

    p = malloc(len ? len : 1);
    if (p == NULL) {
        exit(2);
    }

    memcpy(p, v, len);
    rc = ngx_tiktok_reports_sig_decode_base64(p, len, out, out_size, out_len);
    free(p);

    return rc;
}


static void
test_digest(const digest_t *d, const digest_t *other)
{
    char                            h[MAX_HDR], enc[256];
    const char                     *secrets[1];
    unsigned char                   m[NGX_TIKTOK_REPORTS_SIG_MAX_DIGEST];
    unsigned char                   bad[NGX_TIKTOK_REPORTS_SIG_MAX_DIGEST];
    unsigned char                   copy[BODY_LEN];
    size_t                          dl, n;
    ngx_tiktok_reports_sig_conf_t  *sc;

    secrets[0] = key1;
    sc = conf(NGX_TIKTOK_REPORTS_SIG_HMAC, d->name, secrets, 1);

    dl = mac(d->ossl, key1, body, BODY_LEN, m);
    if (dl != d->len) {
        diag("%s: length %zu", d->name, dl);
        exit(2);
    }

    /* accepted */

    hex(m, dl, 0, enc);
    ok(check(sc, NULL, body, BODY_LEN, enc, 0) == 1,
       "%s: lowercase hex accepted", d->name);

    ok(check(sc, NULL, body, BODY_LEN, enc, 1) == 1,
       "%s: body in 1-byte chunks accepted", d->name);

    ok(check(sc, NULL, body, BODY_LEN, enc, 7) == 1,
       "%s: body in 7-byte chunks accepted", d->name);

    snprintf(h, sizeof(h), " \t%s\t ", enc);
    ok(check(sc, NULL, body, BODY_LEN, h, 0) == 1,
       "%s: spaces and tabs around the value accepted", d->name);

    snprintf(h, sizeof(h), "sha256=%s", enc);
    ok(check(sc, NULL, body, BODY_LEN, h, 0) == 1,
       "%s: \"sha256=\" prefix accepted", d->name);

    snprintf(h, sizeof(h), "%s=%s", d->name, enc);
    ok(check(sc, NULL, body, BODY_LEN, h, 0) == 1,
       "%s: \"%s=\" prefix accepted", d->name, d->name);

    snprintf(h, sizeof(h), "HMAC %s", enc);
    ok(check(sc, NULL, body, BODY_LEN, h, 0) == 1,
       "%s: \"HMAC \" prefix accepted", d->name);

    hex(m, dl, 1, enc);
    ok(check(sc, NULL, body, BODY_LEN, enc, 0) == 1,
       "%s: uppercase hex accepted", d->name);

    b64(m, dl, 0, enc);
    ok(check(sc, NULL, body, BODY_LEN, enc, 0) == 1,
       "%s: base64 accepted", d->name);

    snprintf(h, sizeof(h), "HMAC sha256=%s", enc);
    ok(check(sc, NULL, body, BODY_LEN, h, 0) == 1,
       "%s: \"HMAC sha256=\" prefix with base64 accepted", d->name);

    snprintf(h, sizeof(h), "hmac-%s=%s", d->name, enc);
    ok(check(sc, NULL, body, BODY_LEN, h, 0) == 1,
       "%s: \"hmac-%s=\" prefix accepted", d->name, d->name);

    b64(m, dl, 1, enc);
    ok(check(sc, NULL, body, BODY_LEN, enc, 0) == 1,
       "%s: base64url without padding accepted", d->name);

    /* rejected */

    ok(check(sc, NULL, body, BODY_LEN, "", 0) == 0,
       "%s: empty header rejected", d->name);

    mac(d->ossl, key3, body, BODY_LEN, bad);
    hex(bad, dl, 0, enc);
    ok(check(sc, NULL, body, BODY_LEN, enc, 0) == 0,
       "%s: wrong secret rejected", d->name);

    memcpy(bad, m, dl);
    bad[dl / 2] ^= 0x01;
    hex(bad, dl, 0, enc);
    ok(check(sc, NULL, body, BODY_LEN, enc, 0) == 0,
       "%s: one flipped digest byte rejected", d->name);

    memcpy(copy, body, BODY_LEN);
    copy[BODY_LEN / 3] ^= 0x20;
    hex(m, dl, 0, enc);
    ok(check(sc, NULL, copy, BODY_LEN, enc, 0) == 0,
       "%s: one flipped body byte rejected", d->name);

    ok(check(sc, NULL, body, BODY_LEN - 1, enc, 0) == 0,
       "%s: truncated body rejected", d->name);

    enc[2 * dl - 2] = '\0';
    ok(check(sc, NULL, body, BODY_LEN, enc, 0) == 0,
       "%s: hex digest one byte short rejected", d->name);

    b64(m, dl - 1, 0, enc);
    ok(check(sc, NULL, body, BODY_LEN, enc, 0) == 0,
       "%s: base64 digest one byte short rejected", d->name);

    hex(m, dl, 0, enc);
    enc[5] = 'g';
    ok(check(sc, NULL, body, BODY_LEN, enc, 0) == 0,
       "%s: non-hex of the right length rejected", d->name);

    hex(m, dl, 0, enc);
    n = dl;
    snprintf(h, sizeof(h), "%.*s %s", (int) n, enc, enc + n);
    ok(check(sc, NULL, body, BODY_LEN, h, 0) == 0,
       "%s: digest with an embedded space rejected", d->name);

    hex(m, dl, 0, enc);
    snprintf(h, sizeof(h), "%s%s", enc, "00");
    ok(check(sc, NULL, body, BODY_LEN, h, 0) == 0,
       "%s: hex digest with one byte more rejected", d->name);

    memset(h, 'A', 10240);
    h[10240] = '\0';
    ok(check(sc, NULL, body, BODY_LEN, h, 0) == 0,
       "%s: 10 KB of base64 junk rejected", d->name);

    for (n = 0; n < 10240; n++) {
        h[n] = (char) ("0123456789abcdef= \t,;"[n % 21]);
    }

    h[10240] = '\0';
    ok(check(sc, NULL, body, BODY_LEN, h, 0) == 0,
       "%s: 10 KB of mixed junk rejected", d->name);

    n = mac(other->ossl, key1, body, BODY_LEN, bad);
    hex(bad, n, 0, enc);
    ok(check(sc, NULL, body, BODY_LEN, enc, 0) == 0,
       "%s: correct %s digest (hex) rejected", d->name, other->name);

    b64(bad, n, 0, enc);
    snprintf(h, sizeof(h), "%s=%s", other->name, enc);
    ok(check(sc, NULL, body, BODY_LEN, h, 0) == 0,
       "%s: correct %s digest (base64) rejected", d->name, other->name);

    ngx_tiktok_reports_sig_conf_free(sc);
}


static void
test_rotation(void)
{
    int                             r1, r2, r3;
    char                            enc[256], err[128];
    size_t                          i, n;
    const char                     *secrets[2];
    unsigned char                   m[NGX_TIKTOK_REPORTS_SIG_MAX_DIGEST];
    ngx_tiktok_reports_sig_conf_t  *sc;

    secrets[0] = key1;
    secrets[1] = key2;
    sc = conf(NGX_TIKTOK_REPORTS_SIG_HMAC, "sha256", secrets, 2);

    n = mac("SHA256", key1, body, BODY_LEN, m);
    hex(m, n, 0, enc);
    r1 = check(sc, NULL, body, BODY_LEN, enc, 0);
    ok(r1 == 1, "rotation: signed with the first secret accepted");
    ok(check(sc, NULL, body, BODY_LEN, enc, 1) == 1,
       "rotation: first secret, body in 1-byte chunks accepted");

    n = mac("SHA256", key2, body, BODY_LEN, m);
    b64(m, n, 0, enc);
    r2 = check(sc, NULL, body, BODY_LEN, enc, 0);
    ok(r2 == 1, "rotation: signed with the second secret accepted");
    ok(check(sc, NULL, body, BODY_LEN, enc, 1) == 1,
       "rotation: second secret, body in 1-byte chunks accepted");

    n = mac("SHA256", key3, body, BODY_LEN, m);
    hex(m, n, 0, enc);
    r3 = check(sc, NULL, body, BODY_LEN, enc, 0);
    ok(r3 == 0, "rotation: signed with a third secret rejected");
    ok(check(sc, NULL, body, BODY_LEN, enc, 1) == 0,
       "rotation: third secret, body in 1-byte chunks rejected");

    ngx_tiktok_reports_sig_conf_free(sc);

    /* the limit, and the last of 16 secrets still counts */

    sc = conf(NGX_TIKTOK_REPORTS_SIG_HMAC, "sha1", NULL, 0);

    for (i = 0; i < NGX_TIKTOK_REPORTS_SIG_MAX_KEYS; i++) {
        snprintf(enc, sizeof(enc), "secret-%zu", i);

        if (ngx_tiktok_reports_sig_conf_add_secret(sc,
                (const unsigned char *) enc, strlen(enc), err)
            != 0)
        {
            break;
        }
    }

    ok(i == NGX_TIKTOK_REPORTS_SIG_MAX_KEYS, "%d secrets can be added",
       NGX_TIKTOK_REPORTS_SIG_MAX_KEYS);

    err[0] = '\0';
    ok(ngx_tiktok_reports_sig_conf_add_secret(sc,
           (const unsigned char *) "one-more", 8, err) == -1
       && strncmp(err, "too many secrets", 16) == 0,
       "one secret more fails with \"%s\"", err);

    snprintf(enc, sizeof(enc), "secret-%d",
             NGX_TIKTOK_REPORTS_SIG_MAX_KEYS - 1);
    n = mac("SHA1", enc, body, BODY_LEN, m);
    hex(m, n, 0, enc);
    ok(check(sc, NULL, body, BODY_LEN, enc, 3) == 1,
       "the 16th secret is accepted");

    ngx_tiktok_reports_sig_conf_free(sc);
}


static void
test_streaming(void)
{
    char                            enc[256];
    size_t                          i, n, len;
    const char                     *secrets[1];
    unsigned char                  *big;
    unsigned char                   m[NGX_TIKTOK_REPORTS_SIG_MAX_DIGEST];
    ngx_tiktok_reports_sig_conf_t  *sc;

    len = 1024 * 1024 + 17;

    big = malloc(len);
    if (big == NULL) {
        exit(2);
    }

    for (i = 0; i < len; i++) {
        big[i] = (unsigned char) (i * 131 + (i >> 9));
    }

    secrets[0] = key1;
    sc = conf(NGX_TIKTOK_REPORTS_SIG_HMAC, "sha512", secrets, 1);

    n = mac("SHA512", key1, big, len, m);
    b64(m, n, 0, enc);

    ok(check(sc, NULL, big, len, enc, 0) == 1,
       "1 MB body at once accepted");
    ok(check(sc, NULL, big, len, enc, 4093) == 1,
       "1 MB body in 4093-byte chunks accepted");
    ok(check(sc, NULL, big, len, enc, 1) == 1,
       "1 MB body in 1-byte chunks accepted");

    big[len - 1] ^= 1;
    ok(check(sc, NULL, big, len, enc, 4096) == 0,
       "1 MB body with its last byte changed rejected");

    ngx_tiktok_reports_sig_conf_free(sc);
    free(big);

    /* an empty body has a MAC too */

    sc = conf(NGX_TIKTOK_REPORTS_SIG_HMAC, "sha256", secrets, 1);
    n = mac("SHA256", key1, (const unsigned char *) "", 0, m);
    hex(m, n, 0, enc);
    ok(check(sc, NULL, NULL, 0, enc, 0) == 1, "empty body accepted");
    ngx_tiktok_reports_sig_conf_free(sc);
}


static void
test_standard(void)
{
    int                             rc;
    char                            h[1024], enc[256], err[128];
    char                            signed_str[256];
    size_t                          i, n;
    const char                     *secrets[2];
    unsigned char                   m[NGX_TIKTOK_REPORTS_SIG_MAX_DIGEST];
    ngx_tiktok_reports_sig_conf_t  *sc;
    const unsigned char            *sb;

    static const char  *bad_secrets[] = {
        "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "whsec_",
        "whsec_a",
        "whsec_!!!!",
        "whsec_Mf=Q",
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw=",
        "whsec_ MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "WHSEC_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n",
        NULL
    };

    sb = (const unsigned char *) sw_body;
    secrets[0] = sw_secret;
    sc = conf(NGX_TIKTOK_REPORTS_SIG_STANDARD, "sha256", secrets, 1);

    ok(check(sc, sw_prefix, sb, strlen(sw_body), sw_sig, 0) == 1,
       "standard: the published test vector accepted");

    ok(check(sc, sw_prefix, sb, strlen(sw_body), sw_sig, 1) == 1,
       "standard: test vector, body in 1-byte chunks accepted");

    snprintf(h, sizeof(h), "v1a,xxx v1,bogus== %s", sw_sig);
    ok(check(sc, sw_prefix, sb, strlen(sw_body), h, 0) == 1,
       "standard: accepted after \"v1a,xxx v1,bogus==\"");

    snprintf(h, sizeof(h), "  %s \t v1,AAAA", sw_sig);
    ok(check(sc, sw_prefix, sb, strlen(sw_body), h, 0) == 1,
       "standard: accepted first of two, with extra spaces and tabs");

    snprintf(h, sizeof(h), "v1,,, v2,x , ,v1 v1, %s v1a,hnO3f9T8Ytu9HwrXslvu"
             "mlUpqtNVqkhqw/enGzPCXe5BdqzCInXqYXFymVJaA7AZdpXwVLPo3mNl8EM+m7"
             "TBAg==", sw_sig);
    ok(check(sc, sw_prefix, sb, strlen(sw_body), h, 0) == 1,
       "standard: malformed entries around it skipped");

    ok(check(sc, sw_prefix, (const unsigned char *) "{\"test\": 2432232315}",
             strlen(sw_body), sw_sig, 0) == 0,
       "standard: changed body rejected");

    ok(check(sc, "msg_p5jXN8AQM9LWM0D4loKWxJek.1614265331.", sb,
             strlen(sw_body), sw_sig, 0) == 0,
       "standard: changed timestamp rejected");

    ok(check(sc, "msg_p5jXN8AQM9LWM0D4loKWxJel.1614265330.", sb,
             strlen(sw_body), sw_sig, 0) == 0,
       "standard: changed id rejected");

    ok(check(sc, NULL, sb, strlen(sw_body), sw_sig, 0) == 0,
       "standard: body alone (no id and timestamp) rejected");

    ok(check(sc, sw_prefix, sb, strlen(sw_body), "", 0) == 0,
       "standard: empty header rejected");

    ok(check(sc, sw_prefix, sb, strlen(sw_body), "   ", 0) == 0,
       "standard: blank header rejected");

    ok(check(sc, sw_prefix, sb, strlen(sw_body), sw_sig + 3, 0) == 0,
       "standard: signature without \"v1,\" rejected");

    ok(check(sc, sw_prefix, sb, strlen(sw_body),
             "v1a,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=", 0) == 0,
       "standard: right signature under \"v1a\" rejected");

    ok(check(sc, sw_prefix, sb, strlen(sw_body),
             "V1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=", 0) == 0,
       "standard: right signature under \"V1\" rejected");

    ok(check(sc, sw_prefix, sb, strlen(sw_body),
             "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE", 0) == 0,
       "standard: signature without its padding rejected");

    ok(check(sc, sw_prefix, sb, strlen(sw_body),
             "v1,g0hM9SsE-OTPJTGt_tmIKtSyZlE3uFJELVlNIOLJ1OE=", 0) == 0,
       "standard: signature in the URL-safe alphabet rejected");

    ok(check(sc, sw_prefix, sb, strlen(sw_body),
             "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OA=", 0) == 0,
       "standard: signature with a changed last character rejected");

    ok(check(sc, sw_prefix, sb, strlen(sw_body),
             "v1, g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=", 0) == 0,
       "standard: space after \"v1,\" rejected");

    ok(check_n(sc, sw_prefix, sb, strlen(sw_body), sw_sig,
               strlen(sw_sig) - 1, 0) == 0,
       "standard: header one byte short rejected");

    /* a fresh signature computed here */

    n = (size_t) snprintf(signed_str, sizeof(signed_str),
                          "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W.1700000000.%s",
                          sw_body);

    {
        unsigned char  key[32];
        size_t         klen;

        if (ngx_tiktok_reports_sig_decode_base64(
                (const unsigned char *) sw_secret + 6, strlen(sw_secret) - 6,
                key, sizeof(key), &klen)
            != 0
            || EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, key, klen,
                         (const unsigned char *) signed_str, n, m, sizeof(m),
                         &n)
               == NULL)
        {
            diag("standard: cannot compute the expected signature");
            exit(2);
        }
    }

    b64(m, n, 0, enc);
    snprintf(h, sizeof(h), "v1,%s", enc);
    ok(check(sc, "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W.1700000000.", sb,
             strlen(sw_body), h, 0) == 1,
       "standard: signature computed with EVP_Q_mac accepted");

    ngx_tiktok_reports_sig_conf_free(sc);

    /* rotation */

    secrets[0] = "whsec_c2Vjb25kLXNlY3JldC1rZXktMjQtYnl0ZXMh";
    secrets[1] = sw_secret;
    sc = conf(NGX_TIKTOK_REPORTS_SIG_STANDARD, NULL, secrets, 2);

    ok(check(sc, sw_prefix, sb, strlen(sw_body), sw_sig, 0) == 1,
       "standard: second of two secrets accepted (digest NULL)");

    ok(check(sc, sw_prefix, sb, strlen(sw_body),
             "v1,aW52YWxpZC1zaWduYXR1cmUtb2YtMzItYnl0ZXMhIQ==", 0) == 0,
       "standard: a 32-byte non-signature rejected with two secrets");

    ngx_tiktok_reports_sig_conf_free(sc);

    /* bad secrets */

    sc = conf(NGX_TIKTOK_REPORTS_SIG_STANDARD, "sha256", NULL, 0);

    for (i = 0; bad_secrets[i]; i++) {
        err[0] = '\0';
        rc = ngx_tiktok_reports_sig_conf_add_secret(sc,
                 (const unsigned char *) bad_secrets[i],
                 strlen(bad_secrets[i]), err);

        ok(rc == -1
           && strcmp(err, "secret must be \"whsec_\" followed by base64") == 0,
           "standard: secret \"%.12s...\" (%zu) rejected: %s",
           bad_secrets[i], i, err);
    }

    ok(check(sc, sw_prefix, sb, strlen(sw_body), sw_sig, 0) == 0,
       "standard: nothing accepted without a secret");

    ngx_tiktok_reports_sig_conf_free(sc);
}


typedef struct {
    const char  *value;
    size_t       dl;
    int          rc;
    const char  *hex;
} parse_case_t;


#define H16  "00112233445566778899aabbccddeeff"
#define B16  "ABEiM0RVZneImaq7zN3u/w=="
#define H20  "000102030405060708090a0b0c0d0e0f10111213"


static void
test_parse(void)
{
    int            rc;
    char           got[2 * NGX_TIKTOK_REPORTS_SIG_MAX_DIGEST + 1];
    char           big[300];
    size_t         i;
    unsigned char  out[NGX_TIKTOK_REPORTS_SIG_MAX_DIGEST];

    static const parse_case_t  cases[] = {
        { H16, 16, 1, H16 },
        { "00112233445566778899AABBCCDDEEFF", 16, 1, H16 },
        { "00112233445566778899aAbBcCdDeEfF", 16, 1, H16 },
        { B16, 16, 1, H16 },
        { "ABEiM0RVZneImaq7zN3u/w", 16, 1, H16 },
        { "ABEiM0RVZneImaq7zN3u_w", 16, 1, H16 },
        { "ABEiM0RVZneImaq7zN3u_w==", 16, 1, H16 },
        { "sha256=" H16, 16, 1, H16 },
        { "SHA256=" H16, 16, 1, H16 },
        { "md5=" B16, 16, 1, H16 },
        { "sha-1=" H16, 16, 1, H16 },
        { "hmac-sha256=" H16, 16, 1, H16 },
        { "HMAC-SHA512=" B16, 16, 1, H16 },
        { "hmacsha256=" H16, 16, 1, H16 },
        { "HMACSHA1=" H16, 16, 1, H16 },
        { "HMAC " H16, 16, 1, H16 },
        { "HMAC   " B16, 16, 1, H16 },
        { "Signature " B16, 16, 1, H16 },
        { "x-hub_Sig2 " H16, 16, 1, H16 },
        { "HMAC sha256=" H16, 16, 1, H16 },
        { "HMAC  hmac-sha384=" B16, 16, 1, H16 },
        { " \t HMAC sha256=" H16 " \t ", 16, 1, H16 },
        { H20, 20, 1, H20 },
        { "sha1=" H20, 20, 1, H20 },
        { "AAECAwQFBgcICQoLDA0ODxAREhM=", 20, 1, H20 },
        { "AAECAwQFBgcICQoLDA0ODxAREhM", 20, 1, H20 },

        { "", 16, 0, NULL },
        { " \t ", 16, 0, NULL },
        { H16, 20, 0, NULL },
        { H20, 16, 0, NULL },
        { H16, 0, 0, NULL },
        { H16 H16 H16 H16 H16, 65, 0, NULL },
        { "0011223344556677 8899aabbccddeeff", 16, 0, NULL },
        { "00112233445566778899aabbccddeef", 16, 0, NULL },
        { "00112233445566778899aabbccddeeff0", 16, 0, NULL },
        { "00112233445566778899aabbccddeefg", 16, 0, NULL },
        { "00112233445566778899aabbccddeef=", 16, 0, NULL },
        { H16 " extra", 16, 0, NULL },
        { H16 ",", 16, 0, NULL },
        { "ABEiM0RVZneImaq7zN3u/w=", 16, 0, NULL },
        { "ABEiM0RVZneImaq7zN3u/w===", 16, 0, NULL },
        { "ABEiM0RVZneImaq7zN3u/x==", 16, 0, NULL },
        { "ABEiM0RVZneImaq7zN3u+w_=", 16, 0, NULL },
        { "ABEiM0RVZneImaq7zN3u/w==" "AAAA", 16, 0, NULL },
        { "ABEiM0RVZneI maq7zN3u/w==", 16, 0, NULL },
        { "ABEiM0RVZneImaq7zN3u.w==", 16, 0, NULL },
        { "sha3=" H16, 16, 0, NULL },
        { "x=" H16, 16, 0, NULL },
        { "sha256:" H16, 16, 0, NULL },
        { "sha256 =" H16, 16, 0, NULL },
        { "sha256= " H16, 16, 0, NULL },
        { "sha256=sha256=" H16, 16, 0, NULL },
        { "hmac-hmac-sha256=" H16, 16, 0, NULL },
        { "HMAC HMAC " H16, 16, 0, NULL },
        { "HMAC\t" H16, 16, 0, NULL },
        { "1HMAC " H16, 16, 0, NULL },
        { "HM.AC " H16, 16, 0, NULL },
        { "sha256=", 16, 0, NULL },
        { "HMAC ", 16, 0, NULL },
        { "HMAC sha256=", 16, 0, NULL },
        { "=", 16, 0, NULL },
        { "==", 16, 0, NULL },
        { "====", 16, 0, NULL },
        { NULL, 0, 0, NULL }
    };

    for (i = 0; cases[i].value; i++) {
        memset(out, 0xaa, sizeof(out));
        rc = parse(cases[i].value, cases[i].dl, out);

        if (rc == 1) {
            hex(out, cases[i].dl, 0, got);

        } else {
            got[0] = '\0';
        }

        ok(rc == cases[i].rc
           && (rc == 0 || strcmp(got, cases[i].hex) == 0),
           "parse \"%s\" (%zu): %d%s%s", cases[i].value, cases[i].dl,
           cases[i].rc, rc == 1 ? " " : "", got);
    }

    /* never beyond len: a NUL or a digit right after the value */

    ok(parse_n(H16 "\0", 33, 16, out) == 0, "parse: trailing NUL rejected");
    ok(parse_n("\0" H16, 33, 16, out) == 0, "parse: leading NUL rejected");
    ok(parse_n(H16 "00", 32, 16, out) == 1, "parse: stops at len");
    ok(parse_n("sha256=" H16, 7, 16, out) == 0,
       "parse: prefix alone (len cut) rejected");
    ok(parse_n("HMAC " H16, 5, 16, out) == 0,
       "parse: scheme alone (len cut) rejected");
    ok(parse_n("hmac-sha25", 10, 16, out) == 0,
       "parse: cut inside the prefix rejected");

    memset(big, 'a', sizeof(big));
    ok(parse_n(big, sizeof(big), 16, out) == 0,
       "parse: 300 letters rejected");

    memcpy(big, "HMAC ", 5);
    ok(parse_n(big, sizeof(big), 64, out) == 0,
       "parse: scheme and 295 letters rejected");
}


static void
test_base64(void)
{
    size_t         olen;
    unsigned char  out[16];

    olen = 99;
    ok(decode("", sizeof(out), out, &olen) == 0 && olen == 0,
       "base64: empty decodes to nothing");
    ok(decode("Zg==", sizeof(out), out, &olen) == 0 && olen == 1
       && out[0] == 'f', "base64: \"Zg==\"");
    ok(decode("Zg", sizeof(out), out, &olen) == 0 && olen == 1
       && out[0] == 'f', "base64: \"Zg\" without padding");
    ok(decode("Zm8=", sizeof(out), out, &olen) == 0 && olen == 2
       && memcmp(out, "fo", 2) == 0, "base64: \"Zm8=\"");
    ok(decode("Zm9v", sizeof(out), out, &olen) == 0 && olen == 3
       && memcmp(out, "foo", 3) == 0, "base64: \"Zm9v\"");
    ok(decode("Zm9vYmFy", sizeof(out), out, &olen) == 0 && olen == 6
       && memcmp(out, "foobar", 6) == 0, "base64: \"Zm9vYmFy\"");
    ok(decode("+vv8/f7/+/8=", sizeof(out), out, &olen) == 0 && olen == 8
       && memcmp(out, "\xfa\xfb\xfc\xfd\xfe\xff\xfb\xff", 8) == 0,
       "base64: standard alphabet");
    ok(decode("-vv8_f7_-_8", sizeof(out), out, &olen) == 0 && olen == 8
       && memcmp(out, "\xfa\xfb\xfc\xfd\xfe\xff\xfb\xff", 8) == 0,
       "base64: URL-safe alphabet without padding");
    ok(decode("Zm9v", 3, out, &olen) == 0 && olen == 3,
       "base64: output of exactly out_size");

    ok(decode("Zm9v", 2, out, &olen) == -1, "base64: out_size too small");
    ok(decode("Zg", 0, out, &olen) == -1, "base64: out_size 0");
    ok(decode("Z", sizeof(out), out, &olen) == -1, "base64: one character");
    ok(decode("Zg=", sizeof(out), out, &olen) == -1,
       "base64: short padding");
    ok(decode("Zg===", sizeof(out), out, &olen) == -1,
       "base64: long padding");
    ok(decode("Zm8==", sizeof(out), out, &olen) == -1,
       "base64: padding where none fits");
    ok(decode("Zm9v=", sizeof(out), out, &olen) == -1,
       "base64: padding after a full group");
    ok(decode("=", sizeof(out), out, &olen) == -1, "base64: \"=\"");
    ok(decode("====", sizeof(out), out, &olen) == -1, "base64: \"====\"");
    ok(decode("Zg==Zg==", sizeof(out), out, &olen) == -1,
       "base64: padding inside");
    ok(decode("Zh==", sizeof(out), out, &olen) == -1,
       "base64: nonzero unused bits");
    ok(decode("Zm9 v", sizeof(out), out, &olen) == -1, "base64: space");
    ok(decode("Zm9v\n", sizeof(out), out, &olen) == -1, "base64: newline");
    ok(decode("Zm9.", sizeof(out), out, &olen) == -1, "base64: \".\"");
    ok(decode("-vv8/f7/+/8=", sizeof(out), out, &olen) == -1,
       "base64: both alphabets in one value");
    ok(ngx_tiktok_reports_sig_decode_base64((const unsigned char *) "Zm\0v",
           4, out, sizeof(out), &olen) == -1, "base64: NUL");
}


static void
test_conf(void)
{
    int                             status;
    pid_t                           pid;
    char                            err[128];
    const char                     *secrets[1];
    unsigned char                   m[NGX_TIKTOK_REPORTS_SIG_MAX_DIGEST];
    char                            enc[256];
    size_t                          n;
    ngx_tiktok_reports_sig_conf_t  *sc;

    memset(err, 'x', sizeof(err));
    sc = ngx_tiktok_reports_sig_conf_create(NGX_TIKTOK_REPORTS_SIG_HMAC,
                                            "sha3", err);
    ok(sc == NULL && memchr(err, '\0', sizeof(err)) != NULL
       && strncmp(err, "unknown digest \"sha3\"", 21) == 0,
       "unknown digest: %s", sc ? "(created)" : err);

    memset(err, 'x', sizeof(err));
    memset(enc, 'z', 200);
    enc[200] = '\0';
    sc = ngx_tiktok_reports_sig_conf_create(NGX_TIKTOK_REPORTS_SIG_HMAC, enc,
                                            err);
    ok(sc == NULL && memchr(err, '\0', sizeof(err)) != NULL,
       "a 200-byte digest name fits the error buffer");

    sc = ngx_tiktok_reports_sig_conf_create(NGX_TIKTOK_REPORTS_SIG_HMAC,
                                            "sha256x", err);
    ok(sc == NULL, "digest \"sha256x\" rejected: %s", sc ? "" : err);

    sc = ngx_tiktok_reports_sig_conf_create(NGX_TIKTOK_REPORTS_SIG_HMAC,
                                            "hmac-sha256", err);
    ok(sc == NULL, "digest \"hmac-sha256\" rejected: %s", sc ? "" : err);

    sc = ngx_tiktok_reports_sig_conf_create(NGX_TIKTOK_REPORTS_SIG_HMAC,
                                            "", err);
    ok(sc == NULL, "empty digest rejected: %s", sc ? "" : err);

    sc = ngx_tiktok_reports_sig_conf_create(NGX_TIKTOK_REPORTS_SIG_HMAC,
                                            NULL, err);
    ok(sc == NULL, "no digest rejected: %s", sc ? "" : err);

    sc = ngx_tiktok_reports_sig_conf_create(7, "sha256", err);
    ok(sc == NULL, "unknown mode rejected: %s", sc ? "" : err);

    sc = ngx_tiktok_reports_sig_conf_create(NGX_TIKTOK_REPORTS_SIG_HMAC,
                                            "SHA256", err);
    ok(sc != NULL, "digest names are case-insensitive");

    if (sc) {
        err[0] = '\0';
        ok(ngx_tiktok_reports_sig_conf_add_secret(sc,
               (const unsigned char *) "", 0, err) == -1
           && strcmp(err, "empty secret") == 0,
           "empty secret: %s", err);

        ok(ngx_tiktok_reports_sig_conf_add_secret(sc,
               (const unsigned char *) "k\0ey", 4, err) == 0,
           "a secret with a NUL byte is taken whole");

        n = mac("SHA256", "k", body, BODY_LEN, m);
        hex(m, n, 0, enc);
        ok(check(sc, NULL, body, BODY_LEN, enc, 0) == 0,
           "a secret is not cut at its NUL byte");

        ngx_tiktok_reports_sig_conf_free(sc);
    }

    /* no secrets: every check fails, none errors */

    sc = conf(NGX_TIKTOK_REPORTS_SIG_HMAC, "md5", NULL, 0);
    n = mac("MD5", key1, body, BODY_LEN, m);
    hex(m, n, 0, enc);
    ok(check(sc, NULL, body, BODY_LEN, enc, 0) == 0,
       "without secrets nothing is accepted");
    ngx_tiktok_reports_sig_conf_free(sc);

    /* a long key (hashed by HMAC first) */

    memset(enc, 'k', 200);
    enc[200] = '\0';
    secrets[0] = enc;
    sc = conf(NGX_TIKTOK_REPORTS_SIG_HMAC, "sha384", secrets, 1);
    n = mac("SHA384", enc, body, BODY_LEN, m);
    b64(m, n, 1, enc);
    ok(check(sc, NULL, body, BODY_LEN, enc, 0) == 1,
       "a 200-byte secret works");
    ngx_tiktok_reports_sig_conf_free(sc);

    /* in a child, so that a crash fails this check and not the whole file */
    fflush(stdout);
    pid = fork();

    if (pid == 0) {
        ngx_tiktok_reports_sig_conf_free(NULL);
        ngx_tiktok_reports_sig_free(NULL);
        _exit(0);
    }

    ok(pid > 0 && waitpid(pid, &status, 0) == pid && WIFEXITED(status)
       && WEXITSTATUS(status) == 0,
       "conf_free(NULL) and free(NULL) are no-ops");
}


static void
test_lifecycle(void)
{
    int                             r1, r2;
    char                            e1[256], e2[256];
    size_t                          n;
    const char                     *secrets[1];
    unsigned char                   m[NGX_TIKTOK_REPORTS_SIG_MAX_DIGEST];
    unsigned char                   buf[BODY_LEN + 16];
    ngx_tiktok_reports_sig_t       *a, *b;
    ngx_tiktok_reports_sig_conf_t  *sc;

    secrets[0] = key1;
    sc = conf(NGX_TIKTOK_REPORTS_SIG_HMAC, "sha256", secrets, 1);

    n = mac("SHA256", key1, body, BODY_LEN, m);
    hex(m, n, 0, e1);

    /* two checks at once from one configuration */

    a = ngx_tiktok_reports_sig_begin(sc, NULL, 0);
    b = ngx_tiktok_reports_sig_begin(sc, NULL, 0);

    ok(a != NULL && b != NULL, "two checks can run at once");

    if (a == NULL || b == NULL) {
        exit(2);
    }

    ngx_tiktok_reports_sig_update(a, body, 10);
    ngx_tiktok_reports_sig_update(b, body, 20);
    ngx_tiktok_reports_sig_update(a, body + 10, BODY_LEN - 10);
    ngx_tiktok_reports_sig_update(b, body + 20, BODY_LEN - 30);

    r1 = ngx_tiktok_reports_sig_verify(a, (unsigned char *) e1, strlen(e1));
    r2 = ngx_tiktok_reports_sig_verify(b, (unsigned char *) e1, strlen(e1));
    ok(r1 == 1 && r2 == 0, "interleaved checks stay apart");

    ok(ngx_tiktok_reports_sig_verify(a, (unsigned char *) e1, strlen(e1))
       == 0, "a second verify fails closed");
    ok(ngx_tiktok_reports_sig_update(a, body, 1) == -1,
       "update after verify fails");

    ngx_tiktok_reports_sig_free(a);
    ngx_tiktok_reports_sig_free(b);

    /* freed without verify */

    a = ngx_tiktok_reports_sig_begin(sc, NULL, 0);
    ok(a != NULL && ngx_tiktok_reports_sig_update(a, body, 5) == 0,
       "a check can be abandoned midway");
    ngx_tiktok_reports_sig_free(a);

    /* a prefix in HMAC mode is just the start of the signed bytes */

    memcpy(buf, "prefix.", 7);
    memcpy(buf + 7, body, BODY_LEN);
    n = mac("SHA256", key1, buf, BODY_LEN + 7, m);
    hex(m, n, 0, e2);
    ok(check(sc, "prefix.", body, BODY_LEN, e2, 0) == 1,
       "the prefix is signed before the body");
    ok(check(sc, NULL, body, BODY_LEN, e2, 0) == 0,
       "and is needed");

    ngx_tiktok_reports_sig_conf_free(sc);
}


/* a random header never matches, and nothing reads out of bounds */

static void
test_random(void)
{
    int                             bad;
    char                            h[256];
    size_t                          i, j, len, dl;
    uint64_t                        x;
    const char                     *secrets[2];
    unsigned char                   out[NGX_TIKTOK_REPORTS_SIG_MAX_DIGEST];
    ngx_tiktok_reports_sig_conf_t  *hc, *swc;

    static const char  alphabet[] = "0123456789abcdefABCDEF+/-_= \t,v1shaHMC";

    secrets[0] = key1;
    secrets[1] = key2;
    hc = conf(NGX_TIKTOK_REPORTS_SIG_HMAC, "sha256", secrets, 2);
    secrets[0] = sw_secret;
    swc = conf(NGX_TIKTOK_REPORTS_SIG_STANDARD, "sha256", secrets, 1);

    x = 0x9e3779b97f4a7c15ULL;
    bad = 0;

    for (i = 0; i < 3000; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;

        len = x % sizeof(h);

        for (j = 0; j < len; j++) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;

            h[j] = (i & 1) ? (char) (x >> 24)
                           : alphabet[(x >> 24) % (sizeof(alphabet) - 1)];
        }

        for (dl = 16; dl <= 64; dl += 4) {
            (void) parse_n(h, len, dl, out);
        }

        if (check_n(hc, NULL, body, i % BODY_LEN, h, len, 0) != 0
            || check_n(swc, sw_prefix, body, i % BODY_LEN, h, len, 0) != 0)
        {
            bad++;
        }
    }

    ok(bad == 0, "3000 random headers never match");

    ngx_tiktok_reports_sig_conf_free(hc);
    ngx_tiktok_reports_sig_conf_free(swc);
}


int
main(void)
{
    size_t  i;

    setvbuf(stdout, NULL, _IONBF, 0);

    for (i = 0; i < NDIGESTS; i++) {
        /* a correct MAC of another length must not pass */
        test_digest(&digests[i], &digests[i == 3 ? 4 : 3]);
    }

    test_rotation();
    test_streaming();
    test_standard();
    test_parse();
    test_base64();
    test_conf();
    test_lifecycle();
    test_random();

    printf("1..%d\n", ntests);

    if (nfailed) {
        diag("%d of %d failed", nfailed, ntests);
        return 1;
    }

    return 0;
}
