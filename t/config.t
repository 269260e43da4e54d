#!/usr/bin/perl
# Bad configuration is refused at nginx -t, with a message that names the
# directive; good configuration passes.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use TikTokTest;
use MIME::Base64 ();

my $t = TikTokTest->new;

my @cases = (
    [ 'webhook without secret or off',
      "location /w { tiktok_reports_webhook; }",
      qr/"tiktok_reports_webhook" needs "tiktok_reports_signature"/ ],
    [ 'signature without secret',
      "location /w { tiktok_reports_webhook; tiktok_reports_signature hmac-sha256; }",
      qr/"tiktok_reports_webhook" needs/ ],
    [ 'unknown algorithm',
      "location /w { tiktok_reports_webhook; tiktok_reports_signature hmac-sha3; tiktok_reports_secret x; }",
      qr/tiktok_reports_signature/ ],
    [ 'not an hmac word',
      "location /w { tiktok_reports_webhook; tiktok_reports_signature rsa; tiktok_reports_secret x; }",
      qr/invalid "tiktok_reports_signature" "rsa"/ ],
    [ 'bad header parameter',
      "location /w { tiktok_reports_webhook; tiktok_reports_signature hmac-sha256 X-Sig; tiktok_reports_secret x; }",
      qr/invalid parameter "X-Sig" of "tiktok_reports_signature"/ ],
    [ 'standard webhooks secret without whsec_',
      "location /w { tiktok_reports_webhook; tiktok_reports_signature standard-webhooks; tiktok_reports_secret abc; }",
      qr/"tiktok_reports_secret": .*whsec_/ ],
    [ 'bad redis address',
      "location /w { tiktok_reports_redis 127.0.0.1:99999; tiktok_reports_webhook; tiktok_reports_signature off; }",
      qr/tiktok_reports_redis/ ],
    [ 'bad db',
      "location /w { tiktok_reports_redis_db -1; }",
      qr/tiktok_reports_redis_db/ ],
    [ 'bad timeout',
      "location /w { tiktok_reports_redis_timeout soon; }",
      qr/tiktok_reports_redis_timeout/ ],
    [ 'zero timeout',
      "location /w { tiktok_reports_redis_timeout 0; }",
      qr/"tiktok_reports_redis_timeout" must be greater than 0/ ],
    [ 'bad ttl',
      "location /w { tiktok_reports_ttl forever; }",
      qr/tiktok_reports_ttl/ ],
    [ 'bad keep_reports',
      "location /w { tiktok_reports_keep_reports yes; }",
      qr/tiktok_reports_keep_reports/ ],
    [ 'webhook twice',
      "location /w { tiktok_reports_webhook; tiktok_reports_webhook; tiktok_reports_signature off; }",
      qr/"tiktok_reports_webhook" directive is duplicate/ ],
    [ 'webhook in server context',
      "tiktok_reports_webhook;",
      qr/"tiktok_reports_webhook" directive is not allowed here/ ],
);

for my $c (@cases) {
    my ($name, $server, $re) = @$c;
    my ($rc, $out) = $t->nginx_test_conf(server => $server);
    isnt($rc, 0, "$name: refused");
    like($out, $re, "$name: message names the directive") or diag $out;
}

# a full configuration passes nginx -t, and then does what it says: the
# secret of a location replaces the inherited one, a location without one
# inherits it, the unix socket, the ACL user and the database are used, and
# the key prefix, TTL, keep_reports and stream_maxlen 0 show in Redis
my $sock = $t->dir . '/redis.sock';
my %full = (http => <<'EOF', server => <<"EOF");
    tiktok_reports_redis_timeout 2s;
    tiktok_reports_key_prefix "app:";
    tiktok_reports_ttl 7d;
    tiktok_reports_keep_reports on;
    tiktok_reports_stream_maxlen 0;
    tiktok_reports_signature hmac-sha256 header=X-Signature;
    tiktok_reports_secret one;
EOF
        location = /a { tiktok_reports_webhook; tiktok_reports_secret two; }
        location = /b { tiktok_reports_webhook;
                        tiktok_reports_redis unix:$sock;
                        tiktok_reports_redis_password user pass;
                        tiktok_reports_redis_db 2; }
        location = /c { tiktok_reports_webhook;
                        tiktok_reports_signature standard-webhooks;
                        tiktok_reports_secret whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw; }
EOF
my ($rc, $out) = $t->nginx_test_conf(%full);
is($rc, 0, 'a full configuration passes nginx -t') or diag $out;

$t->start_redis(extra => "unixsocket $sock\nunixsocketperm 777\n"
                         . "user user on >pass ~* &* +\@all\n");
$t->start_nginx(%full);

my $n = 0;
sub signed {
    my ($path, $secret) = @_;
    my $id = 'full-' . ++$n;
    my $body = json_encode({ results => [ tiktok_dlr(id => $id) ] });
    my $res = $t->http(method => 'POST', path => $path, body => $body,
        headers => [ 'Content-Type' => 'application/json',
                     'X-Signature' => hmac_hex('sha256', $secret, $body) ]);
    return ($res ? $res->{status} : 0, $id);
}

my ($st, $id) = signed('/a', 'two');
is($st, 200, "a location's own secret is accepted");
is($t->redis('HGET', "app:msg:{$id}", 'status'), 'DELIVERED',
   '... stored with the inherited key prefix');
my $ttl = $t->redis('TTL', "app:msg:{$id}");
ok($ttl > 7 * 86400 - 60 && $ttl <= 7 * 86400, "... with the inherited TTL ($ttl)");
like($t->redis('HGET', "app:msg:{$id}", 'delivery') // '', qr/^\{"bulkId"/,
     '... keeping the report (keep_reports inherited)');
is($t->redis('EXISTS', 'app:events'), 0, '... and no change feed (stream_maxlen 0)');
($st, $id) = signed('/a', 'one');
is($st, 401, 'the secret of the outer level is replaced, not added to');
is($t->redis('EXISTS', "app:msg:{$id}"), 0, '... nothing stored');

($st, $id) = signed('/b', 'one');
is($st, 200, 'a location without a secret inherits the outer one');
$t->select_db(2);
is($t->redis('HGET', "app:msg:{$id}", 'status'), 'DELIVERED',
   '... stored over the unix socket, as the ACL user, in database 2');
$t->select_db(0);
($st, $id) = signed('/b', 'two');
is($st, 401, "... and not another location's secret");

{
    my $key = MIME::Base64::decode_base64('MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw');
    my $body = json_encode({ results => [ tiktok_dlr(id => 'full-std') ] });
    my $ts = time;
    my $res = $t->http(method => 'POST', path => '/c', body => $body,
        headers => [ 'Content-Type' => 'application/json',
                     'webhook-id' => 'msg_1', 'webhook-timestamp' => $ts,
                     'webhook-signature' => 'v1,' . hmac_b64('sha256', $key,
                                                           "msg_1.$ts.$body") ]);
    is($res && $res->{status}, 200, 'standard webhooks in the same server');
}

$t->stop_nginx;
$t->check_logs;

done_testing;
