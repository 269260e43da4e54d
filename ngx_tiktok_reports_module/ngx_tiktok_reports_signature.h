
/*
 * Copyright (C) ngx_tiktok_reports_module authors
 */


#ifndef _NGX_TIKTOK_REPORTS_SIGNATURE_H_INCLUDED_
#define _NGX_TIKTOK_REPORTS_SIGNATURE_H_INCLUDED_


/*
 * Signature checks over the raw body, with libc and OpenSSL only (no nginx
 * headers), so that the fuzzer in fuzz/ can build the header parsers alone.
 * Keys are prepared once at configuration time; a request only duplicates
 * the keyed MAC contexts and streams the body through them.
 */

#include <stddef.h>
#include <stdint.h>


#define NGX_TIKTOK_REPORTS_SIG_HMAC        1
#define NGX_TIKTOK_REPORTS_SIG_STANDARD    2   /* Standard Webhooks v1 */

#define NGX_TIKTOK_REPORTS_SIG_MAX_DIGEST  64
#define NGX_TIKTOK_REPORTS_SIG_MAX_KEYS    16


typedef struct ngx_tiktok_reports_sig_conf_s  ngx_tiktok_reports_sig_conf_t;
typedef struct ngx_tiktok_reports_sig_s       ngx_tiktok_reports_sig_t;


/*
 * mode: SIG_HMAC with digest "md5", "sha1", "sha224", "sha256", "sha384" or
 * "sha512"; SIG_STANDARD ignores digest (always sha256).  NULL and a reason
 * in err (at least 128 bytes) on failure.  Lives until conf_free().
 */
ngx_tiktok_reports_sig_conf_t *ngx_tiktok_reports_sig_conf_create(int mode,
    const char *digest, char *err);

/*
 * Adds one secret: the raw key bytes for SIG_HMAC; "whsec_<base64>" for
 * SIG_STANDARD (decoded here).  0, or -1 with a reason in err.
 */
int ngx_tiktok_reports_sig_conf_add_secret(ngx_tiktok_reports_sig_conf_t *sc,
    const unsigned char *secret, size_t len, char *err);

void ngx_tiktok_reports_sig_conf_free(ngx_tiktok_reports_sig_conf_t *sc);


/*
 * One check: begin (with the signed prefix "id.timestamp." for
 * SIG_STANDARD, nothing for SIG_HMAC), update with every body chunk,
 * then verify against the header value.  verify() is 1 when any secret
 * matches, 0 otherwise; each candidate is compared in constant time.
 */
ngx_tiktok_reports_sig_t *ngx_tiktok_reports_sig_begin(
    ngx_tiktok_reports_sig_conf_t *sc, const unsigned char *prefix,
    size_t prefix_len);
int ngx_tiktok_reports_sig_update(ngx_tiktok_reports_sig_t *s,
    const unsigned char *data, size_t len);
int ngx_tiktok_reports_sig_verify(ngx_tiktok_reports_sig_t *s,
    const unsigned char *header, size_t len);
void ngx_tiktok_reports_sig_free(ngx_tiktok_reports_sig_t *s);


/*
 * The header value of SIG_HMAC: optional "sha256=" (algorithm and "=")
 * or a scheme word and spaces ("HMAC "), then the digest in hex or
 * base64 (standard or URL-safe, padding optional).  Writes exactly
 * digest_len bytes to out and returns 1, or 0 if the value is not that.
 */
int ngx_tiktok_reports_sig_parse_hmac_header(const unsigned char *v,
    size_t len, size_t digest_len, unsigned char *out);

/* base64 (standard or URL-safe, padding optional); -1 on bad input */
int ngx_tiktok_reports_sig_decode_base64(const unsigned char *in, size_t len,
    unsigned char *out, size_t out_size, size_t *out_len);


#endif /* _NGX_TIKTOK_REPORTS_SIGNATURE_H_INCLUDED_ */
