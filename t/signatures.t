#!/usr/bin/perl
# Every spelling of a signature header the docs allow is accepted, and the
# near misses are refused: hex in any case, base64 in either alphabet with
# or without padding (but not both alphabets, bad padding or stray bits),
# an algorithm word and "=", a scheme word and spaces; Standard Webhooks
# with several entries and secrets, its strict base64, the id and the
# timestamp checks.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use MIME::Base64 ();
use TikTokTest;

my $std1 = 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw';
my $std2 = 'whsec_' . MIME::Base64::encode_base64('second secret of the rotation', '');

my $t = TikTokTest->new;
$t->start_redis;
$t->start_nginx(server => <<"EOF");
        location = /s256 {
            tiktok_reports_webhook;
            tiktok_reports_signature hmac-sha256;
            tiktok_reports_secret k;
        }
        location = /s1 {
            tiktok_reports_webhook;
            tiktok_reports_signature hmac-sha1 header=X-Hub-Signature;
            tiktok_reports_secret k;
        }
        location = /std {
            tiktok_reports_webhook;
            tiktok_reports_signature standard-webhooks;
            tiktok_reports_secret $std1;
            tiktok_reports_secret $std2;
        }
EOF

my $n = 0;

# a new body each time, so that every accepted one stores a new message
sub body { json_encode({ results => [ tiktok_seen(id => 'sig-' . ++$n) ] }) }

sub b64 { MIME::Base64::encode_base64($_[0], '') }
sub url { (my $s = $_[0]) =~ tr{+/}{-_}; $s }
sub unpad { (my $s = $_[0]) =~ s/=+$//; $s }

sub try {
    my ($path, $header, $value, $body) = @_;
    my $r = $t->http(method => 'POST', path => $path, body => $body,
        headers => [ 'Content-Type' => 'application/json', $header => $value ]);
    return $r ? $r->{status} : 0;
}

# --- hmac-sha256 in X-Signature -------------------------------------------

# a body whose digest's base64 has both "+" and "/" in it, so that an
# alphabet can be mixed
my ($body, $raw, $b64);
for (1 .. 200) {
    $body = body();
    $raw = TikTokTest::hmac_raw('sha256', 'k', $body);
    $b64 = b64($raw);
    last if $b64 =~ m{\+} && $b64 =~ m{/};
}
my $hex = unpack 'H*', $raw;

my @forms = (
    [ 'hex', $hex, 200 ],
    [ 'hex in capitals', uc $hex, 200 ],
    [ 'hex in mixed case', join('', map { $_ % 2 ? uc substr($hex, $_, 1)
                                                 : substr($hex, $_, 1) } 0 .. 63), 200 ],
    [ 'base64', $b64, 200 ],
    [ 'base64 without padding', unpad($b64), 200 ],
    [ 'base64url', url($b64), 200 ],
    [ 'base64url without padding', unpad(url($b64)), 200 ],
    [ 'sha256=', "sha256=$hex", 200 ],
    [ 'SHA256= and base64', 'SHA256=' . $b64, 200 ],
    [ 'hmac-sha256=', "hmac-sha256=$hex", 200 ],
    [ 'HMACSHA256=', "HMACSHA256=$hex", 200 ],
    [ 'a scheme word', "HMAC $hex", 200 ],
    [ 'a scheme word and sha256=', "HMAC sha256=$b64", 200 ],
    [ 'a scheme word of letters, digits, _ and -', "X-1_a $hex", 200 ],
    [ 'a scheme word and two spaces', "Bearer  $hex", 200 ],
    [ 'base64 with one = too many', $b64 . '=', 401 ],
    [ 'base64 with a = too few', unpad($b64) . 'A=', 401 ],
    [ 'base64 of one character too many', unpad($b64) . 'A', 401 ],
    [ 'base64 of a digest and a byte', b64($raw . 'x'), 401 ],
    [ 'base64 with a character of no alphabet', substr($b64, 0, 10) . '*'
                                                . substr($b64, 11), 401 ],
    [ 'base64 mixing the alphabets', do { (my $s = $b64) =~ s{\+}{-}; $s }, 401 ],
    [ 'base64 with stray bits', do {
          # the last character before "=" carries 4 unused bits
          my $s = unpad($b64);
          my $last = substr($s, -1);
          my $i = index('ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/', $last);
          substr($s, -1) = substr('ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/',
                                  $i ^ 1, 1);
          $s . '=' }, 401 ],
    [ 'the hex of a shorter digest', substr($hex, 0, 40), 401 ],
    [ 'an algorithm word without a digest', 'sha256=', 401 ],
    [ 'a scheme word starting with a digit', "1HMAC $hex", 401 ],
    [ 'a scheme word and a tab', "HMAC\t$hex", 401 ],
    [ 'a scheme word and a comma', "HMAC,$hex", 401 ],
    [ 'an unknown algorithm word', "sha3=$hex", 401 ],
    [ 'hmac- and nothing known', "hmac-x=$hex", 401 ],
);
for my $f (@forms) {
    my ($name, $value, $want) = @$f;
    is(try('/s256', 'X-Signature', $value, $body), $want, "hmac-sha256, $name: $want");
}

# --- hmac-sha1 in a header of its own ---------------------------------------

{
    my $b = body();
    my $d = TikTokTest::hmac_raw('sha1', 'k', $b);
    is(try('/s1', 'X-Hub-Signature', 'sha1=' . unpack('H*', $d), $b), 200,
       'hmac-sha1, sha1= in X-Hub-Signature');
    is(try('/s1', 'X-Hub-Signature', 'sha-1=' . b64($d), $b), 200,
       'hmac-sha1, sha-1= and base64');
    is(try('/s1', 'X-Signature', unpack('H*', $d), $b), 401,
       'hmac-sha1, the right digest in the wrong header');
    is(try('/s1', 'X-Hub-Signature', unpack('H*', TikTokTest::hmac_raw('sha1', 'K', $b)), $b),
       401, 'hmac-sha1, another secret');
}

# --- Standard Webhooks --------------------------------------------------------

{
    my $key1 = MIME::Base64::decode_base64(substr($std1, 6));
    my $key2 = MIME::Base64::decode_base64(substr($std2, 6));
    my $now = time;
    my $sign = sub {
        my ($key, $id, $ts, $b) = @_;
        return b64(TikTokTest::hmac_raw('sha256', $key, "$id.$ts.$b"));
    };
    my $std = sub {
        my (%o) = @_;
        my $b = $o{body} // body();
        my $ts = $o{ts} // $now;
        my $id = $o{id} // 'msg_1';
        my $sig = $o{sig} // 'v1,' . $sign->($o{key} // $key1, $id, $ts, $b);
        my @h = ('Content-Type' => 'application/json',
                 'webhook-signature' => $sig);
        push @h, 'webhook-id' => $id unless $o{no_id};
        push @h, 'webhook-timestamp' => $ts unless $o{no_ts};
        my $r = $t->http(method => 'POST', path => '/std', body => $b, headers => \@h);
        return $r ? "$r->{status} $r->{body}" : 'none';
    };
    my $ok = qr/^200 \{"accepted":1,/;
    my $bad = '401 {"error":"invalid signature"}';
    my $late = '401 {"error":"timestamp outside tolerance"}';

    like($std->(), $ok, 'standard: one entry');
    like($std->(key => $key2), $ok, 'standard: the second secret');
    {
        my $b = body();
        my $good = $sign->($key2, 'msg_1', $now, $b);
        like($std->(body => $b, sig => "v1,AAAA v1a,$good v2,$good \tv1,$good"), $ok,
             'standard: other versions and bad entries skipped, tabs and spaces');
        is($std->(body => $b, sig => "v1a,$good v2,$good"), $bad,
           'standard: no v1 entry');
        is($std->(body => $b, sig => 'v1,' . unpad($good)), $bad,
           'standard: base64 without its padding is refused');
        is($std->(body => $b, sig => "v1,$good,x"), $bad, 'standard: an entry with a tail');
        is($std->(body => $b, sig => 'v1'), $bad, 'standard: a version alone');
        is($std->(body => $b, sig => 'v1,' . b64($raw . 'x')), $bad,
           'standard: an entry too long for a digest');
        is($std->(body => $b, sig => ''), $bad, 'standard: an empty header');
    }
    # a digest with "+" or "/" in its base64, in the URL alphabet
    for (1 .. 50) {
        my $b = body();
        my $good = $sign->($key1, 'msg_2', $now, $b);
        next unless $good =~ m{[+/]};
        is($std->(body => $b, id => 'msg_2', sig => 'v1,' . url($good)), $bad,
           'standard: base64url is not the scheme\'s alphabet');
        last;
    }
    is($std->(id => 'msg.1'), $bad, 'standard: an id with a dot');
    is($std->(id => ''), $bad, 'standard: an empty id');
    is($std->(no_id => 1), $bad, 'standard: no id');
    is($std->(no_ts => 1), $bad, 'standard: no timestamp');
    is($std->(ts => 'soon'), $late, 'standard: a timestamp that is not a number');
    is($std->(ts => $now - 310), $late, 'standard: 5 min 10 s old');
    is($std->(ts => $now + 310), $late, 'standard: 5 min 10 s ahead');
    like($std->(ts => $now - 240), $ok, 'standard: 4 min old');
    like($std->(ts => $now + 240), $ok, 'standard: 4 min ahead');
}

# the hmac-sha256 forms (one body), hmac-sha1 (one body), five accepted
# Standard Webhooks bodies, and the change feed
is($t->redis('DBSIZE'), 8, 'every accepted body stored its report, and only those');

$t->stop_nginx;
$t->check_logs;

done_testing;
