#!/usr/bin/perl
# Bad configuration is refused at nginx -t, with a message that names the
# directive; good configuration passes.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use TikTokTest;

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

my ($rc, $out) = $t->nginx_test_conf(http => <<'EOF', server => <<'EOF');
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
                        tiktok_reports_redis unix:/tmp/redis.sock;
                        tiktok_reports_redis_password user pass;
                        tiktok_reports_redis_db 2; }
        location = /c { tiktok_reports_webhook;
                        tiktok_reports_signature standard-webhooks;
                        tiktok_reports_secret whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw; }
EOF
is($rc, 0, 'a full configuration passes nginx -t') or diag $out;

done_testing;
