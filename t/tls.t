#!/usr/bin/perl
# TLS to Redis: a redis-server with a TLS port (and a plain one, for the
# test's own look at Redis), certificates from an openssl-made CA.  A
# verified connection stores and looks up; an unknown CA, a name that does
# not match and a missing client certificate answer 503, write nothing and
# are logged once with the reason; verify off takes any certificate;
# locations share a connection only when their TLS settings match; large
# bodies and answers cross the SSL layer whole; "nginx -t" refuses what it
# can see is wrong.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use TikTokTest;
use ThrottleProxy;

my $t = TikTokTest->new;
my $d = $t->dir;
my $tls = TikTokTest::free_port();

# a CA, the server's certificate for 127.0.0.1 and localhost, a client's,
# and another CA that signed none of them
TikTokTest::tls_certs($d);

$t->start_redis(extra => "tls-port $tls\n"
    . "tls-cert-file $d/tls/server.pem\ntls-key-file $d/tls/server.key\n"
    . "tls-ca-cert-file $d/tls/ca.pem\ntls-auth-clients no\n");

my $redis = "tiktok_reports_redis 127.0.0.1:$tls;\n"
    . "            tiktok_reports_redis_ssl on;\n";
my $ca = "tiktok_reports_redis_ssl_trusted_certificate $d/tls/ca.pem;";

sub server_conf {
    return <<"EOF";
        client_max_body_size 8m;
        location = /ok {
            $redis
            $ca
            tiktok_reports_webhook;
            tiktok_reports_signature off;
        }
        location /ok/status/ {
            $redis
            $ca
            tiktok_reports_status;
        }
        location = /localhost {
            $redis
            $ca
            tiktok_reports_redis_ssl_name localhost;
            tiktok_reports_redis_ssl_server_name on;
            tiktok_reports_webhook;
            tiktok_reports_signature off;
        }
        location = /unknown-ca {
            $redis
            tiktok_reports_redis_ssl_trusted_certificate $d/tls/other.pem;
            tiktok_reports_webhook;
            tiktok_reports_signature off;
        }
        location = /wrong-name {
            $redis
            $ca
            tiktok_reports_redis_ssl_name redis.example.com;
            tiktok_reports_webhook;
            tiktok_reports_signature off;
        }
        location = /no-verify {
            $redis
            tiktok_reports_redis_ssl_verify off;
            tiktok_reports_webhook;
            tiktok_reports_signature off;
        }
        location = /client-cert {
            $redis
            $ca
            tiktok_reports_redis_ssl_certificate $d/tls/client.pem;
            tiktok_reports_redis_ssl_certificate_key $d/tls/client.key;
            tiktok_reports_webhook;
            tiktok_reports_signature off;
        }
        location = /tls-to-plain {
            tiktok_reports_redis 127.0.0.1:%%REDIS_PORT%%;
            tiktok_reports_redis_ssl on;
            tiktok_reports_redis_ssl_verify off;
            tiktok_reports_webhook;
            tiktok_reports_signature off;
        }
        location = /plain {
            tiktok_reports_redis 127.0.0.1:$tls;
            tiktok_reports_webhook;
            tiktok_reports_signature off;
        }
EOF
}

sub post {
    my ($path, @ids) = @_;
    return $t->http(method => 'POST', path => $path,
        headers => [ 'Content-Type' => 'application/json' ],
        body => json_encode({ results => [ map { tiktok_dlr(id => $_) } @ids ] }));
}

# clients of the TLS port, as Redis sees them
sub tls_clients {
    my $list = $t->redis('CLIENT', 'LIST');
    return scalar grep { /laddr=127\.0\.0\.1:$tls / } split /\n/, $list;
}

sub count_log {
    my ($re) = @_;
    return scalar grep { /$re/ } split /\n/, $t->error_log;
}

$t->start_nginx(server => server_conf());

# --- verified -------------------------------------------------------------

my $r = post('/ok', 'tls-1');
is($r->{status}, 200, 'verified TLS: 200');
is($r->{body}, '{"accepted":1,"duplicates":0,"rejected":[]}', 'stored');
is($t->redis('HGET', 'tiktok:msg:{tls-1}', 'status'), 'DELIVERED',
   'in Redis');

$r = $t->http(path => '/ok/status/tls-1');
is($r->{status}, 200, 'lookup over TLS');
is(json_decode($r->{body})->{status}, 'DELIVERED', 'lookup answer');


$r = post('/localhost', 'tls-2');
is($r->{status}, 200, 'the name "localhost", with SNI: 200');
is($t->redis('HGET', 'tiktok:msg:{tls-2}', 'status'), 'DELIVERED',
   'stored');

$r = post('/client-cert', 'tls-3');
is($r->{status}, 200, 'a client certificate the server does not ask for');

# every store connects when the worker starts: /ok and /ok/status/ share
# one, /localhost, /client-cert and /no-verify have other TLS settings and
# one each; the refused ones keep none
for (1 .. 100) {
    last if tls_clients() >= 4;
    select undef, undef, undef, 0.05;
}
is(tls_clients(), 4, 'one TLS connection per distinct TLS setting');

# --- refused --------------------------------------------------------------

for my $i (1 .. 3) {
    $r = post('/unknown-ca', "unknown-$i");
    is($r->{status}, 503, "unknown CA: 503 ($i)");
    select undef, undef, undef, 0.3;
}
is($t->redis('EXISTS', 'tiktok:msg:{unknown-1}', 'tiktok:msg:{unknown-3}'),
   0, 'unknown CA: nothing written');
# the 503 may come from the request's own timeout before the handshake
# failed (valgrind is slow): the line is awaited, then counted
my $unknown_ca = qr/\[error\] .*redis 127\.0\.0\.1:$tls unavailable: TLS certificate verify error: \((19:self-signed certificate in certificate chain|20:unable to get local issuer certificate)\)/;
for (1 .. 100) {
    last if count_log(qr/unavailable: TLS certificate verify error/) >= 1;
    select undef, undef, undef, 0.1;
}
if ($ENV{TT_VALGRIND}) {
    # so slow that the first handshake can time out, and the outage's one
    # error line says so; the reason then follows at info
    ok(count_log(qr/unavailable: TLS certificate verify error: \((19|20):/)
       >= 1, 'unknown CA: logged with the reason');
} else {
    is(count_log($unknown_ca), 1, 'unknown CA: logged once, with the reason');
}

$r = post('/wrong-name', 'wrong-1');
is($r->{status}, 503, 'a name the certificate does not have: 503');
is($t->redis('EXISTS', 'tiktok:msg:{wrong-1}'), 0, 'nothing written');
like($t->error_log,
     qr/unavailable: TLS certificate does not match "redis\.example\.com"/,
     'the mismatch is logged');

$r = post('/plain', 'plain-1');
is($r->{status}, 503, 'plain TCP to the TLS port: 503, no connection shared');

# Redis reads a ClientHello as the start of a command line that never ends
$r = post('/tls-to-plain', 'tls-plain-1');
is($r->{status}, 503, 'TLS to a plain port: 503');
like($t->error_log,
     qr/\[error\] .*redis 127\.0\.0\.1:${\ $t->redis_port} unavailable: timed out/,
     'logged: no answer in time');

$r = post('/no-verify', 'noverify-1');
is($r->{status}, 200, 'verify off: 200');
is($t->redis('HGET', 'tiktok:msg:{noverify-1}', 'status'), 'DELIVERED',
   'stored');

$r = post('/ok', 'tls-4');
is($r->{status}, 200, 'the verified location is not affected');

# --- large: records of 16k both ways ---------------------------------------

my @ids = map { "big-$_" } 1 .. 2000;
$r = post('/ok', @ids);
is($r->{status}, 200, '2000 reports over TLS');
is($r->{body}, '{"accepted":2000,"duplicates":0,"rejected":[]}',
   'all accepted');
is($t->redis('HGET', 'tiktok:msg:{big-2000}', 'status'), 'DELIVERED',
   'the last one stored');

$r = $t->http(method => 'POST', path => '/ok/status/',
              headers => [ 'Content-Type' => 'application/json' ],
              body => json_encode({ ids => [ @ids[0 .. 999] ] }));
is($r->{status}, 200, '1000-id lookup over TLS');
my $j = eval { json_decode($r->{body}) } || {};
is(scalar @{ $j->{results} || [] }, 1000, '1000 results');
is(scalar(grep { ($_->{status} // '') eq 'DELIVERED' } @{ $j->{results} || [] }),
   1000, 'all found, whole');
is($j->{results}[999]{messageId}, 'big-1000', 'in order');

$r = post('/ok', @ids);
is($r->{body}, '{"accepted":0,"duplicates":2000,"rejected":[]}',
   'the same 2000 again: duplicates');

# --- a slow Redis: the SSL layer keeps what the socket does not take ----------

my $proxy = ThrottleProxy->new(redis_port => $tls, rate => 1e9,
                               lifetime => 60);
my $slow = $proxy->port;
$t->stop_nginx;
$t->start_nginx(server => server_conf() . <<"EOF");
        location = /slow {
            tiktok_reports_redis 127.0.0.1:$slow;
            tiktok_reports_redis_ssl on;
            $ca
            tiktok_reports_redis_ssl_name localhost;
            tiktok_reports_redis_timeout 20s;
            tiktok_reports_keep_reports on;
            tiktok_reports_webhook;
            tiktok_reports_signature off;
        }
EOF

$r = post('/slow', 'slow-0');
is($r->{status}, 200, 'through the proxy: 200');

# Redis stops reading: the socket fills, the SSL layer keeps the rest of
# the records until the socket takes them
$proxy->pause;
@ids = map { "slow-$_" } 1 .. 6000;
my $body = json_encode({ results => [ map { tiktok_dlr(id => $_) } @ids ] });
my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                              PeerPort => $t->http_port) or die $!;
print $s "POST /slow HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
    . "Content-Type: application/json\r\n"
    . 'Content-Length: ' . length($body) . "\r\n\r\n" . $body;
select undef, undef, undef, 1;
is($t->redis("EXISTS", "tiktok:msg:{slow-6000}"), 0, "held up meanwhile");
$proxy->resume;
my $raw = do { local $/; <$s> };
$r = TikTokTest::parse_response($raw // '');
is($r && $r->{status}, 200, "6000 reports through a stalled link: 200");
is($r && $r->{body}, '{"accepted":6000,"duplicates":0,"rejected":[]}',
   'all accepted');
is($t->redis("HGET", "tiktok:msg:{slow-6000}", "status"), "DELIVERED",
   'the last one stored');
$proxy->stop;

$t->stop_nginx;
$t->check_logs;

# --- the server asks for a client certificate ------------------------------

$t->redis('CONFIG', 'SET', 'tls-auth-clients', 'yes');
rename "$d/error.log", "$d/error.log.1";
$t->start_nginx(server => server_conf());

$r = post('/ok', 'nocert-1');
is($r->{status}, 503, 'no client certificate: 503');
is($t->redis('EXISTS', 'tiktok:msg:{nocert-1}'), 0, 'nothing written');
like($t->error_log, qr/\[error\] .*redis 127\.0\.0\.1:$tls unavailable: SSL_(read|write)\(\) failed \(.*(alert certificate required|reset)/i,
     'logged with the reason');
like($t->error_log, qr/\[info\] .*: SSL_(read|write)\(\) failed/,
     'nginx\'s own SSL line at info');
unlike($t->error_log, qr/\[(error|crit)\] \S+: SSL_/,
       'and not above');

$r = post('/client-cert', 'cert-1');
is($r->{status}, 200, 'with a client certificate: 200');
is($t->redis('HGET', 'tiktok:msg:{cert-1}', 'status'), 'DELIVERED',
   'stored');

$t->stop_nginx;
$t->check_logs;

# --- nginx -t --------------------------------------------------------------

my $loc = sub {
    my ($lines) = @_;
    return (server => "        location = /w {\n$lines\n"
        . "            tiktok_reports_webhook;\n"
        . "            tiktok_reports_signature off;\n        }\n");
};

my ($rc, $out) = $t->nginx_test_conf($loc->($redis));
isnt($rc, 0, 'nginx -t: verify without a trusted certificate is refused');
like($out, qr/"tiktok_reports_redis_ssl_verify" needs "tiktok_reports_redis_ssl_trusted_certificate"/,
     'and says what is missing');

($rc, $out) = $t->nginx_test_conf($loc->(
    "$redis tiktok_reports_redis_ssl_trusted_certificate $d/tls/none.pem;"));
isnt($rc, 0, 'nginx -t: a CA file that does not exist is refused');
like($out, qr/"tiktok_reports_redis_ssl_trusted_certificate": cannot open "\Q$d\E\/tls\/none\.pem"/,
     'naming the directive and the file');

($rc, $out) = $t->nginx_test_conf($loc->(
    "$redis $ca tiktok_reports_redis_ssl_certificate $d/tls/client.pem;"));
isnt($rc, 0, 'nginx -t: a client certificate without its key is refused');
like($out, qr/"tiktok_reports_redis_ssl_certificate" needs "tiktok_reports_redis_ssl_certificate_key"/,
     'and says so');

($rc, $out) = $t->nginx_test_conf($loc->(
    "$redis $ca tiktok_reports_redis_ssl_certificate $d/tls/client.pem;"
    . " tiktok_reports_redis_ssl_certificate_key $d/tls/server.key;"));
isnt($rc, 0, 'nginx -t: a key that is not the certificate\'s is refused');
like($out, qr/cannot use "tiktok_reports_redis_ssl_certificate"/, 'and says so');

($rc, $out) = $t->nginx_test_conf($loc->(
    "tiktok_reports_redis unix:$d/redis.sock; tiktok_reports_redis_ssl on;"
    . " tiktok_reports_redis_ssl_verify off;"));
isnt($rc, 0, 'nginx -t: TLS over a unix socket is refused');
like($out, qr/"tiktok_reports_redis_ssl" is not possible over the unix socket/,
     'and says why');

($rc, $out) = $t->nginx_test_conf($loc->(
    "$redis tiktok_reports_redis_ssl_verify off;"));
is($rc, 0, 'nginx -t: verify off needs no CA') or diag($out);

($rc, $out) = $t->nginx_test_conf(
    http => "tiktok_reports_redis_ssl on;\n$ca\n",
    $loc->("tiktok_reports_redis 127.0.0.1:$tls;"));
is($rc, 0, 'nginx -t: settings inherited from http') or diag($out);

done_testing;
