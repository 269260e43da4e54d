#!/usr/bin/perl
# HTTP at its edges, as each location of the module sees it: a body that
# must be discarded but is malformed (nginx's 400, counted), methods the
# metrics location does not take, a signature header after more headers
# than nginx's first list part holds, a Content-Type with a tab, chunked
# bodies, and values with tabs and carriage returns shown as JSON.  The
# health location takes GET and HEAD only.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use IO::Socket::INET;
use TikTokTest;

my $t = TikTokTest->new;
$t->start_redis;
$t->start_nginx(server => <<'EOF');
        location = /open {
            tiktok_reports_webhook;
            tiktok_reports_signature off;
        }
        location = /signed {
            tiktok_reports_webhook;
            tiktok_reports_signature hmac-sha256 header=X-Late-Signature;
            tiktok_reports_secret k;
        }
        location /st/ {
            tiktok_reports_status;
        }
        location = /metrics {
            tiktok_reports_metrics;
        }
        location = /health {
            tiktok_reports_health;
        }
EOF

# a raw request; the status code and the body
sub raw {
    my ($req) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                  PeerPort => $t->http_port) or die $!;
    print $s $req;
    local $/;
    my $res = TikTokTest::parse_response(<$s> // '');
    return $res ? ($res->{status}, $res->{body}) : (0, '');
}

sub metrics {
    my $r = $t->http(path => '/metrics');
    return { map { /^(\S+) (\S+)$/ ? ($1 => $2) : () } grep { !/^#/ } split /\n/, $r->{body} };
}

my $bad_chunk = "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\nzz\r\n";

# bodies to discard that are not valid chunked encoding: nginx's 400
{
    my $m0 = metrics();
    my @st = map { (raw($_))[0] } (
        "GET /open HTTP/1.1\r\nHost: x\r\n$bad_chunk",
        "POST /open HTTP/1.1\r\nHost: x\r\nContent-Type: text/xml\r\n$bad_chunk",
        "GET /st/x HTTP/1.1\r\nHost: x\r\n$bad_chunk",
        "POST /st/ HTTP/1.1\r\nHost: x\r\n$bad_chunk",
        "POST /open HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n$bad_chunk",
        "GET /metrics HTTP/1.1\r\nHost: x\r\n$bad_chunk",
        "GET /health HTTP/1.1\r\nHost: x\r\n$bad_chunk",
    );
    is("@st", '400 400 400 400 400 400 400', 'a malformed chunked body: 400 everywhere');
    my $m = metrics();
    my $d = sub { $m->{$_[0]} - $m0->{$_[0]} };
    is($d->('tiktok_reports_requests_total{location="webhook",code="400"}'), 3,
       'counted as the webhook\'s 400s');
    is($d->('tiktok_reports_requests_total{location="status",code="400"}'), 2,
       'counted as the lookup\'s 400s');
    like($t->error_log, qr/client sent invalid chunked body/, 'nginx says why');
}

# the metrics location: GET and HEAD only
{
    my ($st) = raw("POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
                   . "Connection: close\r\n\r\n{}");
    is($st, 405, 'metrics: POST is 405');
    my $r = $t->http(method => 'HEAD', path => '/metrics');
    is($r->{status}, 200, 'metrics: HEAD is 200');
    is($r->{body}, '', 'metrics: HEAD has no body');
    like($r->{headers}{'content-type'}, qr{^text/plain}, 'metrics: HEAD has the type');
}

# the health location: GET and HEAD
{
    my ($st, $body) = raw("POST /health HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
                          . "Connection: close\r\n\r\n{}");
    is($st, 405, 'health: POST is 405');
    is($body, '{"error":"method not allowed"}', 'health: the JSON error');
    my $r = $t->http(method => 'HEAD', path => '/health');
    is($r->{status}, 200, 'health: HEAD is 200');
    is($r->{body}, '', 'health: HEAD has no body');
}

# a chunked webhook body, in several chunks, signed over its decoded bytes
{
    my $body = json_encode({ results => [ tiktok_seen(id => 'chunked-1') ] });
    my $chunks = join '', map { sprintf("%x\r\n%s\r\n", length $_, $_) }
                          unpack('(A20)*', $body);
    my ($st, $res) = raw("POST /signed HTTP/1.1\r\nHost: x\r\n"
        . "Content-Type: application/json\r\n"
        . 'X-Late-Signature: ' . hmac_hex('sha256', 'k', $body) . "\r\n"
        . "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n$chunks" . "0\r\n\r\n");
    is($st, 200, 'a chunked body, signed: 200');
    is($res, '{"accepted":1,"duplicates":0,"rejected":[]}', 'a chunked body: stored');
}

# the signature header after 40 others: beyond the first part of nginx's list
{
    my $body = json_encode({ results => [ tiktok_seen(id => 'late-1') ] });
    my @h = map { ("X-Filler-$_" => "v$_") } 1 .. 40;
    my $r = $t->http(method => 'POST', path => '/signed', body => $body,
        headers => [ 'Content-Type' => 'application/json', @h,
                     'X-Late-Signature' => hmac_hex('sha256', 'k', $body) ]);
    is($r->{status}, 200, 'a signature header after 40 others is found');
    $r = $t->http(method => 'POST', path => '/signed', body => $body,
        headers => [ 'Content-Type' => 'application/json', @h ]);
    is($r->{status}, 401, '... and its absence after 40 others is noticed');
}

# Content-Type with a tab before it
{
    my $body = json_encode({ results => [ tiktok_seen(id => 'tab-1') ] });
    my ($st) = raw("POST /open HTTP/1.1\r\nHost: x\r\nContent-Type:\tapplication/json\r\n"
                   . 'Content-Length: ' . length($body) . "\r\nConnection: close\r\n\r\n$body");
    is($st, 200, 'a tab before the Content-Type: still JSON');
    ($st) = raw("POST /open HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\t;x=1\r\n"
                . 'Content-Length: ' . length($body) . "\r\nConnection: close\r\n\r\n$body");
    is($st, 200, 'a tab after it: still JSON');
}

# tabs, carriage returns and other control characters in stored values
{
    $t->redis('HSET', 'tiktok:msg:{ctl-1}', 'status', "a\tb\rc\nd\x7f\x00e",
              'callbackData', "\x1b[0m\\\"");
    my $r = $t->http(path => '/st/ctl-1');
    is($r->{body}, '{"messageId":"ctl-1","status":"a\tb\rc\nd' . "\x7f"
                   . '\u0000e","callbackData":"\u001b[0m\\\\\\""}',
       'control characters escaped, DEL kept');
    is_deeply(json_decode($r->{body}),
              { messageId => 'ctl-1', status => "a\tb\rc\nd\x7f\x00e",
                callbackData => "\x1b[0m\\\"" }, '... and read back as stored');
}

$t->stop_nginx;
$t->check_logs;

done_testing;
