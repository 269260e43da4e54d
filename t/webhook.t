#!/usr/bin/perl
# The webhook: Infobip's documented bodies, every row of the contract's
# answer table, signatures, rotation, and the Redis state each leaves.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use TikTokTest;
use MIME::Base64 ();

my $t = TikTokTest->new;
$t->start_redis;
$t->start_nginx(server => <<'EOF');
        location = /webhook {
            tiktok_reports_webhook;
            tiktok_reports_signature hmac-sha256;
            tiktok_reports_secret current-secret;
            tiktok_reports_secret previous-secret;
            client_max_body_size 4m;
        }
        location = /small {
            tiktok_reports_webhook;
            tiktok_reports_signature off;
            client_max_body_size 100;
        }
        location = /auth {
            tiktok_reports_webhook;
            tiktok_reports_signature hmac-sha512 header=Authorization;
            tiktok_reports_secret s3cr3t;
        }
        location = /md5 {
            tiktok_reports_webhook;
            tiktok_reports_signature hmac-md5 header=X-Infobip-Signature;
            tiktok_reports_secret s3cr3t;
        }
        location = /open {
            tiktok_reports_webhook;
            tiktok_reports_signature off;
            tiktok_reports_key_prefix "other:";
            tiktok_reports_ttl 0;
        }
        location = /std {
            tiktok_reports_webhook;
            tiktok_reports_signature standard-webhooks;
            tiktok_reports_secret whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw;
            tiktok_reports_signature_tolerance 100y;
        }
        location = /std-now {
            tiktok_reports_webhook;
            tiktok_reports_signature standard-webhooks;
            tiktok_reports_secret whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw;
        }
EOF

my $S = [ 'sha256', 'current-secret' ];
sub key { "tiktok:msg:{$_[0]}" }

# Infobip's documented TikTok delivery report, byte for byte
my $doc_dlr = <<'EOF';
{
  "results": [
    {
      "bulkId": "a28dd97c-2222-4fcf-99f1-0b557ed381da",
      "price": { "pricePerMessage": 0.01, "currency": "EUR" },
      "status": {
        "groupId": 3,
        "groupName": "DELIVERED",
        "id": 5,
        "name": "DELIVERED_TO_HANDSET",
        "description": "Message delivered to handset"
      },
      "error": {
        "groupId": 0,
        "groupName": "OK",
        "id": 0,
        "name": "NO_ERROR",
        "description": "No Error",
        "permanent": false
      },
      "messageId": "a28dd97c-1ffb-4fcf-99f1-0b557ed381da",
      "to": "u5NkbnslAgxpOelvH01Y+rs7Uw=",
      "sender": "-000pcMJDSDHK-UvK012b10KKXmCvWmVF8o",
      "sentAt": "2023-09-26T10:52:15.457+0000",
      "doneAt": "2023-09-26T10:52:15.799+0000",
      "messageCount": 1,
      "platform": {
        "entityId": "promotional-traffic-entity",
        "applicationId": "marketing-automation-application"
      }
    }
  ]
}
EOF

my $doc_seen = <<'EOF';
{
  "results": [
    {
      "messageId": "45db39c3-7822-4e72-a3ec-c87442c0ffz9",
      "from": "-000pcMJDSDHK-UvK012b10KKXmCvWmVF8o",
      "to": "u5NkbnslAgxpOelvH01Y+rs7Uw=",
      "sentAt": "2019-11-09T16:00:00.000+0000",
      "seenAt": "2019-11-09T16:00:05.000+0000",
      "applicationId": "marketing-automation-application",
      "entityId": "promotional-traffic-entity"
    }
  ]
}
EOF

my $dlr_key = key('a28dd97c-1ffb-4fcf-99f1-0b557ed381da');
my $seen_key = key('45db39c3-7822-4e72-a3ec-c87442c0ffz9');
my $dlr_timeline;

run_cases($t,
    {
        name => 'documented TikTok delivery report',
        body => $doc_dlr, sign => $S,
        expect => { status => 200,
                    body => '{"accepted":1,"duplicates":0,"rejected":[]}',
                    headers => { 'Content-Type' => 'application/json' } },
        redis => [
            [ 'HGET', $dlr_key, 'status' ] => 'DELIVERED',
            [ 'HGET', $dlr_key, 'statusName' ] => 'DELIVERED_TO_HANDSET',
            [ 'HGET', $dlr_key, 'errorName' ] => 'NO_ERROR',
            [ 'HGET', $dlr_key, 'errorPermanent' ] => 'false',
            [ 'HGET', $dlr_key, 'doneAt' ] => '2023-09-26T10:52:15.799+0000',
            [ 'HGET', $dlr_key, 'updatedAt' ] => qr/^\d{13}$/,
            [ 'HEXISTS', $dlr_key, 'delivery' ] => 0,
            # the event, a field of its own: what identifies it, its value
            [ 'HGET', $dlr_key, '@d5 1695725535799' ] => sub {
                $dlr_timeline = $_[0];
                defined $_[0] && $_[0] =~ /^1\|D\|\d{13}\|DELIVERED_TO_HANDSET$/;
            },
            [ 'HEXISTS', $dlr_key, 'timeline' ] => 0,
            [ 'HGET', $dlr_key, 'te' ] => 1,
            [ 'TTL', $dlr_key ] => sub { $_[0] > 30 * 86400 - 60 },
        ],
    },
    {
        name => 'documented TikTok delivery report again: a duplicate',
        body => $doc_dlr, sign => $S,
        expect => { status => 200,
                    body => '{"accepted":0,"duplicates":1,"rejected":[]}' },
        redis => [
            # the event is there as before, and still the only one
            [ 'HGET', $dlr_key, '@d5 1695725535799' ] => sub {
                defined $_[0] && defined $dlr_timeline && $_[0] eq $dlr_timeline;
            },
            [ 'HGET', $dlr_key, 'te' ] => 1,
            [ 'XLEN', 'tiktok:events' ] => 1,
        ],
    },
    {
        name => 'documented TikTok seen report',
        body => $doc_seen, sign => $S,
        expect => { status => 200,
                    body => '{"accepted":1,"duplicates":0,"rejected":[]}' },
        redis => [
            [ 'HGET', $seen_key, 'status' ] => 'SEEN',
            [ 'HGET', $seen_key, 'seenAt' ] => '2019-11-09T16:00:05.000+0000',
            [ 'HEXISTS', $seen_key, 'statusName' ] => 0,
            [ 'HGET', $seen_key, '@s 1573315205000' ]
                => qr/^1\|S\|\d{13}$/,
        ],
    },
    {
        name => 'the change feed has one entry per change',
        body => $doc_seen, sign => $S,
        expect => { status => 200, json => { duplicates => 1 } },
        redis => [
            [ 'XLEN', 'tiktok:events' ] => 2,
            [ 'XREVRANGE', 'tiktok:events', '+', '-', 'COUNT', 1 ] => sub {
                my %f = @{ $_[0][0][1] };
                $f{messageId} eq '45db39c3-7822-4e72-a3ec-c87442c0ffz9'
                && $f{status} eq 'SEEN' && $f{previous} eq ''
                && $f{at} eq '2019-11-09T16:00:05.000+0000';
            },
        ],
    },

    # the answer table, in order of checks
    {
        name => 'GET is not allowed', method => 'GET',
        expect => { status => 405, body => '{"error":"method not allowed"}',
                    headers => { Allow => 'POST',
                                 'Content-Type' => 'application/json' } },
    },
    {
        name => 'PUT is not allowed', method => 'PUT', body => $doc_dlr,
        sign => $S,
        expect => { status => 405, headers => { Allow => 'POST' } },
    },
    {
        name => 'XML is refused before the signature',
        headers => [ 'Content-Type' => 'application/xml' ],
        body => '<DeliveryReports/>',
        expect => { status => 415,
                    json => { error => 'Content-Type must be application/json' } },
    },
    {
        name => 'JSON with a charset is JSON',
        headers => [ 'Content-Type' => 'application/json; charset=utf-8' ],
        body => $doc_dlr, sign => $S,
        expect => { status => 200, json => { duplicates => 1 } },
    },
    {
        name => 'body over client_max_body_size', path => '/small',
        results => [ map { tiktok_dlr(id => "big-$_") } 1 .. 3 ],
        expect => { status => 413 },
        redis => [ [ 'EXISTS', key('big-1') ] => 0 ],
    },
    {
        name => 'missing signature',
        results => [ tiktok_dlr(id => 'nosig-1') ],
        expect => { status => 401, body => '{"error":"invalid signature"}' },
        redis => [ [ 'EXISTS', key('nosig-1') ] => 0 ],
    },
    {
        name => 'wrong signature',
        results => [ tiktok_dlr(id => 'badsig-1') ],
        sign => [ 'sha256', 'not-the-secret' ],
        expect => { status => 401, body => '{"error":"invalid signature"}' },
        redis => [ [ 'EXISTS', key('badsig-1') ] => 0 ],
    },
    {
        name => 'signature of another algorithm',
        results => [ tiktok_dlr(id => 'badsig-2') ],
        sign => [ 'sha1', 'current-secret' ],
        expect => { status => 401 },
        redis => [ [ 'EXISTS', key('badsig-2') ] => 0 ],
    },
    {
        name => 'not JSON', body => 'results: yes', sign => $S,
        expect => { status => 400, like => qr/^\{"error":"invalid JSON at byte \d+/ },
    },
    {
        name => 'truncated JSON', body => '{"results":[{"messageId":"tr', sign => $S,
        expect => { status => 400, like => qr/^\{"error":"[^"]+"\}$/ },
        redis => [ [ 'EXISTS', key('tr') ] => 0 ],
    },
    {
        name => 'not an object', body => '[{"results":[]}]', sign => $S,
        expect => { status => 400, body => '{"error":"body is not a JSON object"}' },
    },
    {
        name => 'no results array', body => '{"result":[]}', sign => $S,
        expect => { status => 400, body => '{"error":"no results array"}' },
    },
    {
        name => 'results is not an array', body => '{"results":{}}', sign => $S,
        expect => { status => 400, body => '{"error":"results is not an array"}' },
    },
    {
        name => 'empty body', body => '', sign => $S,
        expect => { status => 400, body => '{"error":"empty body"}' },
    },
    {
        name => 'empty results', body => '{"results":[]}', sign => $S,
        expect => { status => 200,
                    body => '{"accepted":0,"duplicates":0,"rejected":[]}' },
    },
    {
        name => 'only results that cannot be stored: answered without Redis',
        results => [ tiktok_dlr(), { foo => 1 } ], sign => $S,
        expect => { status => 200,
                    body => '{"accepted":0,"duplicates":0,"rejected":['
                          . '{"index":0,"error":"missing messageId"},'
                          . '{"index":1,"error":"missing messageId"}]}' },
    },
    {
        name => 'a result without messageId does not fail the batch',
        results => [ tiktok_dlr(id => 'batch-1'), tiktok_dlr(),
                     tiktok_seen(id => 'batch-3'), { foo => 1 }, 17 ],
        sign => $S,
        expect => { status => 200,
                    body => '{"accepted":2,"duplicates":0,"rejected":['
                          . '{"index":1,"error":"missing messageId"},'
                          . '{"index":3,"error":"missing messageId"},'
                          . '{"index":4,"error":"result is not an object"}]}' },
        redis => [
            [ 'HGET', key('batch-1'), 'status' ] => 'DELIVERED',
            [ 'HGET', key('batch-3'), 'status' ] => 'SEEN',
        ],
    },
    {
        name => 'neither a delivery nor a seen report',
        results => [ { messageId => 'neither-1', to => 'x' } ], sign => $S,
        expect => { status => 200,
                    json => { accepted => 0, rejected => [
                        { index => 0,
                          error => 'neither a delivery nor a seen report' } ] } },
        redis => [ [ 'EXISTS', key('neither-1') ] => 0 ],
    },

    # signature forms
    {
        name => 'base64 digest', results => [ tiktok_dlr(id => 'b64-1') ],
        sign => [ 'sha256', 'current-secret', 'X-Signature', 'b64' ],
        expect => { status => 200, json => { accepted => 1 } },
    },
    {
        name => 'rotation: the previous secret is accepted',
        results => [ tiktok_dlr(id => 'rot-1') ],
        sign => [ 'sha256', 'previous-secret' ],
        expect => { status => 200, json => { accepted => 1 } },
        redis => [ [ 'HGET', key('rot-1'), 'status' ] => 'DELIVERED' ],
    },
    {
        name => 'Authorization with a scheme word, sha512',
        path => '/auth', results => [ tiktok_dlr(id => 'auth-1') ],
        headers => [ Authorization => 'HMAC '
            . hmac_hex('sha512', 's3cr3t',
                       json_encode({ results => [ tiktok_dlr(id => 'auth-1') ] })) ],
        expect => { status => 200, json => { accepted => 1 } },
    },
    {
        name => 'sha256= style prefix on a custom header, md5',
        path => '/md5', results => [ tiktok_dlr(id => 'md5-1') ],
        headers => [ 'X-Infobip-Signature' => 'md5='
            . hmac_hex('md5', 's3cr3t',
                       json_encode({ results => [ tiktok_dlr(id => 'md5-1') ] })) ],
        expect => { status => 200, json => { accepted => 1 } },
    },
    {
        name => 'signature off, own prefix, no TTL', path => '/open',
        results => [ tiktok_dlr(id => 'open-1') ],
        expect => { status => 200, json => { accepted => 1 } },
        redis => [
            [ 'HGET', 'other:msg:{open-1}', 'status' ] => 'DELIVERED',
            [ 'TTL', 'other:msg:{open-1}' ] => -1,
            [ 'XLEN', 'other:events' ] => 1,
        ],
    },
);

# unicode escapes: the MAC is over the raw bytes, the key over the decoded id
{
    my $body = '{"results":[{"messageId":"u\u00e9\ud83d\ude00-1",'
             . '"seenAt":"2019-11-09T16:00:05.000+0000"}]}';
    run_cases($t, {
        name => 'unicode escapes, signed over the raw bytes',
        body => $body, sign => $S,
        expect => { status => 200, json => { accepted => 1 } },
        redis => [ [ 'HGET', "tiktok:msg:{u\xc3\xa9\xf0\x9f\x98\x80-1}",
                     'status' ] => 'SEEN' ],
    });
}

# Standard Webhooks: the published test vector passes the signature check
# (and then fails as a body, which proves the order of checks)
{
    my @h = ('webhook-id' => 'msg_p5jXN8AQM9LWM0D4loKWxJek',
             'webhook-timestamp' => '1614265330');
    run_cases($t,
        {
            name => 'standard webhooks test vector',
            path => '/std', body => '{"test": 2432232314}',
            headers => [ @h, 'webhook-signature' =>
                         'v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=' ],
            expect => { status => 400, body => '{"error":"no results array"}' },
        },
        {
            name => 'standard webhooks, wrong signature',
            path => '/std', body => '{"test": 2432232315}',
            headers => [ @h, 'webhook-signature' =>
                         'v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=' ],
            expect => { status => 401, body => '{"error":"invalid signature"}' },
        },
        {
            name => 'standard webhooks, old timestamp',
            path => '/std-now', body => '{"test": 2432232314}',
            headers => [ @h, 'webhook-signature' =>
                         'v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=' ],
            expect => { status => 401,
                        body => '{"error":"timestamp outside tolerance"}' },
        },
    );
}

# what is refused is logged with the reason; nothing secret is logged
{
    my $log = $t->error_log;
    like($log, qr/\[info\].*webhook refused: invalid signature/,
         'a bad signature is logged at info (client-caused)');
    like($log, qr/\[info\].*: 3 of 5 results rejected: result 1: missing messageId; result 3: missing messageId; result 4: result is not an object, client/,
         'rejected results are logged in one line with indexes and reasons');
    like($log, qr/1 of 1 results rejected: result 0: neither a delivery nor a seen report, messageId "neither-1"/,
         'a rejected result is logged with its messageId');
    like($log, qr/webhook body refused: no results array/, 'a refused body is logged');
    unlike($log, qr/current-secret|previous-secret|s3cr3t|whsec_/, 'no secret in the log');
    my $sig = hmac_hex('sha256', 'not-the-secret',
                       json_encode({ results => [ tiktok_dlr(id => 'badsig-1') ] }));
    unlike($log, qr/\Q$sig\E/, 'no signature value in the log');
}

# Standard Webhooks at the current time: stored; too new: refused
{
    my $key = MIME::Base64::decode_base64('MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw');
    my $body = json_encode({ results => [ tiktok_dlr(id => 'std-now-1') ] });
    my $sign = sub {
        my ($ts) = @_;
        return [ 'webhook-id' => 'msg_1', 'webhook-timestamp' => $ts,
                 'webhook-signature' => 'v1a,AAAA v1,'
                     . hmac_b64('sha256', $key, "msg_1.$ts.$body") ];
    };
    run_cases($t,
        {
            name => 'standard webhooks, now', path => '/std-now', body => $body,
            headers => $sign->(time),
            expect => { status => 200, json => { accepted => 1 } },
            redis => [ [ 'HGET', 'tiktok:msg:{std-now-1}', 'status' ] => 'DELIVERED' ],
        },
        {
            name => 'standard webhooks, 10 minutes ahead', path => '/std-now',
            body => $body, headers => $sign->(time + 600),
            expect => { status => 401,
                        body => '{"error":"timestamp outside tolerance"}' },
        },
        {
            name => 'standard webhooks, no webhook-id', path => '/std-now',
            body => $body, headers => [ @{ $sign->(time) }[2 .. 5] ],
            expect => { status => 401, body => '{"error":"invalid signature"}' },
        },
    );
}

$t->stop_nginx;
$t->check_logs;

done_testing;
