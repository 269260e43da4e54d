
/*
 * Copyright (C) ngx_tiktok_reports_module authors
 */


/*
 * What the handlers share about a request: its body chunk by chunk, in
 * memory or from nginx's temp file, and its text made safe for a log line.
 */


#include "ngx_tiktok_reports_module.h"


/* bytes read from the temp file at a time */
#define NGX_TIKTOK_REPORTS_FILE_CHUNK  65536


/*
 * The body as nginx kept it: buffers in memory, or a temp file when it was
 * larger than client_body_buffer_size; a file is read in chunks.
 */

ngx_int_t
ngx_tiktok_reports_body_each(ngx_http_request_t *r,
    ngx_tiktok_reports_chunk_pt handler, void *data)
{
    u_char       *buf;
    off_t         pos;
    size_t        size;
    ssize_t       n;
    ngx_int_t     rc;
    ngx_buf_t    *b;
    ngx_chain_t  *cl;

    if (r->request_body == NULL) {
        return NGX_OK;
    }

    buf = NULL;

    for (cl = r->request_body->bufs; cl; cl = cl->next) {
        b = cl->buf;

        if (ngx_buf_in_memory(b)) {
            if (b->last > b->pos) {
                rc = handler(data, b->pos, b->last - b->pos);
                if (rc != NGX_OK) {
                    return rc;
                }
            }

            continue;
        }

        if (!b->in_file || b->file == NULL) {
            continue;
        }

        if (buf == NULL) {
            buf = ngx_palloc(r->pool, NGX_TIKTOK_REPORTS_FILE_CHUNK);
            if (buf == NULL) {
                return NGX_ERROR;
            }
        }

        for (pos = b->file_pos; pos < b->file_last; pos += n) {
            size = (size_t) ngx_min(b->file_last - pos,
                                    NGX_TIKTOK_REPORTS_FILE_CHUNK);

            n = ngx_read_file(b->file, buf, size, pos);

            if (n == NGX_ERROR || n == 0) {
                ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                              "tiktok_reports: cannot read the body file");
                return NGX_ERROR;
            }

            rc = handler(data, buf, n);
            if (rc != NGX_OK) {
                return rc;
            }
        }
    }

    return NGX_OK;
}


/*
 * Text that came with a request, made safe for a log line: printable ASCII
 * is kept; '"', the backslash and every other byte (control characters,
 * DEL, 0x80-0xff) become \xXX as in nginx's access log, so that no value
 * can end the line or forge another.  A value that does not fit in size
 * bytes is cut and ends with "...".
 */

size_t
ngx_tiktok_reports_log_escape(u_char *dst, size_t size, u_char *src,
    size_t len)
{
    u_char         *p, *last;
    size_t          i, n;
    static u_char   hex[] = "0123456789ABCDEF";

    p = dst;
    last = dst + size;

    for (i = 0; i < len; i++) {
        n = (src[i] < 0x20 || src[i] >= 0x7f || src[i] == '"'
             || src[i] == '\\') ? 4 : 1;

        /* room for this byte, and for "..." unless it is the last one */
        if ((size_t) (last - p) < n + (i + 1 < len ? 3 : 0)) {
            return ngx_cpymem(p, "...", 3) - dst;
        }

        if (n == 1) {
            *p++ = src[i];
            continue;
        }

        *p++ = '\\';
        *p++ = 'x';
        *p++ = hex[src[i] >> 4];
        *p++ = hex[src[i] & 0xf];
    }

    return p - dst;
}
