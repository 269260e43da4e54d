#!/usr/bin/perl
# The webhook and the lookup over HTTP/2 (h2c with prior knowledge, curl):
# request bodies reach the module through nginx's HTTP/2 code path.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use TikTokTest;

plan skip_all => 'needs curl with HTTP/2'
    unless `curl --version 2>/dev/null` =~ /HTTP2/;

my $t = TikTokTest->new;
my $h2 = TikTokTest::free_port();
$t->start_redis;
$t->start_nginx(http => <<"EOF2");
    server {
        listen 127.0.0.1:$h2 http2;
        client_body_buffer_size 1k;
        location = /webhook {
            tiktok_reports_webhook;
            tiktok_reports_signature hmac-sha256;
            tiktok_reports_secret h2-secret;
        }
        location /tiktok/status/ {
            tiktok_reports_status;
        }
    }
EOF2

my $dir = $t->dir;
for my $n (1, 200) {
    my $body = json_encode({ results => [ map { tiktok_dlr(id => "h2-$n-$_") } 1 .. $n ] });
    open my $fh, '>', "$dir/body-$n" or die;
    print $fh $body;
    close $fh;
    my $sig = hmac_hex('sha256', 'h2-secret', $body);
    my $out = `curl -s --http2-prior-knowledge -w ' %{http_version} %{http_code}' -H 'Content-Type: application/json' -H 'X-Signature: $sig' --data-binary \@$dir/body-$n http://127.0.0.1:$h2/webhook`;
    like($out, qr/^\{"accepted":$n,"duplicates":0,"rejected":\[\]\} 2 200$/,
         "HTTP/2: $n report(s) accepted" . ($n > 1 ? ' (body in a temp file)' : ''));
    is($t->redis('HGET', "tiktok:msg:{h2-$n-$n}", 'status'), 'DELIVERED', "HTTP/2: $n stored");
}

my $out = `curl -s --http2-prior-knowledge -w ' %{http_code}' http://127.0.0.1:$h2/tiktok/status/h2-1-1`;
like($out, qr/"status":"DELIVERED".* 200$/, 'HTTP/2: lookup');
$out = `curl -s --http2-prior-knowledge -w ' %{http_code}' -H 'Content-Type: application/json' --data-binary '{"results":[]}' http://127.0.0.1:$h2/webhook`;
like($out, qr/invalid signature.* 401$/, 'HTTP/2: unsigned is 401');

$t->stop_nginx;
$t->check_logs;

done_testing;
