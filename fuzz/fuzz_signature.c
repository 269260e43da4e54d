/*
 * libFuzzer target: the signature header parsers and a whole check over
 * arbitrary header values and bodies, in both modes.
 */

#include <stdlib.h>
#include <string.h>

#include "ngx_tiktok_reports_signature.h"


static ngx_tiktok_reports_sig_conf_t  *hmac_conf, *std_conf;


static void
init(void)
{
    char  err[256];

    hmac_conf = ngx_tiktok_reports_sig_conf_create(NGX_TIKTOK_REPORTS_SIG_HMAC,
                                                   "sha256", err);
    std_conf = ngx_tiktok_reports_sig_conf_create(
                                   NGX_TIKTOK_REPORTS_SIG_STANDARD, "sha256", err);
    if (hmac_conf == NULL || std_conf == NULL) {
        abort();
    }

    if (ngx_tiktok_reports_sig_conf_add_secret(hmac_conf,
            (const unsigned char *) "one", 3, err) != 0
        || ngx_tiktok_reports_sig_conf_add_secret(hmac_conf,
            (const unsigned char *) "two", 3, err) != 0
        || ngx_tiktok_reports_sig_conf_add_secret(std_conf,
            (const unsigned char *) "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            38, err) != 0)
    {
        abort();
    }
}


int
LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    size_t                     hlen, dl, olen;
    unsigned char              out[NGX_TIKTOK_REPORTS_SIG_MAX_DIGEST];
    unsigned char              b64[4096];
    ngx_tiktok_reports_sig_t  *s;

    if (hmac_conf == NULL) {
        init();
    }

    /* first byte: how much of the rest is the header value */
    hlen = size ? data[0] : 0;
    if (size) {
        data++;
        size--;
    }
    if (hlen > size) {
        hlen = size;
    }

    for (dl = 16; dl <= 64; dl += 4) {
        (void) ngx_tiktok_reports_sig_parse_hmac_header(data, hlen, dl, out);
    }

    (void) ngx_tiktok_reports_sig_decode_base64(data, hlen, b64, sizeof(b64),
                                                &olen);

    s = ngx_tiktok_reports_sig_begin(hmac_conf, NULL, 0);
    if (s) {
        ngx_tiktok_reports_sig_update(s, data + hlen, size - hlen);
        if (ngx_tiktok_reports_sig_verify(s, data, hlen) == 1) {
            /* a random header matching a MAC would be a broken check */
            abort();
        }
        ngx_tiktok_reports_sig_free(s);
    }

    s = ngx_tiktok_reports_sig_begin(std_conf,
                                     (const unsigned char *) "msg_1.1614265330.",
                                     17);
    if (s) {
        ngx_tiktok_reports_sig_update(s, data + hlen, size - hlen);
        (void) ngx_tiktok_reports_sig_verify(s, data, hlen);
        ngx_tiktok_reports_sig_free(s);
    }

    return 0;
}
