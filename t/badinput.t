#!/usr/bin/perl
# Bad input of every shape gets the contract's answer and writes nothing;
# nothing crashes a worker.  Secrets may come from a file.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use TikTokTest;

my $t = TikTokTest->new;
my $secrets = $t->dir . '/secrets';
open my $fh, '>', $secrets or die;
print $fh "# rotated 2026-11\nfile-secret-new\r\n\nfile-secret-old\n";
close $fh;

$t->start_redis;
# 2500 replies take a while under valgrind; no timing is asserted here;
# header buffers large enough that a 10 KB signature reaches the module
$t->start_nginx(http => "    tiktok_reports_redis_timeout 5s;\n",
                server => <<"EOF");
        large_client_header_buffers 4 16k;
        location = /webhook {
            tiktok_reports_webhook;
            tiktok_reports_signature hmac-sha256;
            tiktok_reports_secret_file $secrets;
            client_max_body_size 8m;
            client_body_buffer_size 4k;
        }
        location = /open {
            tiktok_reports_webhook;
            tiktok_reports_signature off;
            client_max_body_size 8m;
        }
        location = /tiny {
            tiktok_reports_webhook;
            tiktok_reports_signature off;
            client_max_body_size 1k;
        }
EOF

my $S = [ 'sha256', 'file-secret-new' ];
my $dbsize = sub { $t->redis('DBSIZE') };
my $one = json_encode({ results => [ tiktok_dlr(id => 'hdr-1') ] });

# header values of every wrong shape: the module's 401, nothing written
my $good = hmac_hex('sha256', 'file-secret-new', $one);
for my $c (
    [ 'empty', '' ],
    [ 'spaces', '   ' ],
    [ 'non-hex of the right length', 'z' x 64 ],
    [ 'hex one short', substr($good, 0, 63) ],
    [ 'hex one long', $good . 'a' ],
    [ 'hex of a half', substr($good, 0, 32) ],
    [ 'flipped last digit', substr($good, 0, 63) . (substr($good, 63) eq '0' ? '1' : '0') ],
    [ '10 KB', 'a' x 10240 ],
    [ 'two digests, comma', "$good,$good" ],
    [ 'two digests, comma and space', "$good, $good" ],
    [ 'prefix only', 'sha256=' ],
    [ 'scheme word only', 'HMAC ' . substr($good, 0, 10) ],
) {
    my ($name, $v) = @$c;
    my $res = $t->http(method => 'POST', path => '/webhook',
        headers => [ 'Content-Type' => 'application/json', 'X-Signature' => $v ],
        body => $one);
    is($res && $res->{status}, 401, "signature header $name: 401")
        or diag($res && $res->{raw});
    is($res && $res->{body}, '{"error":"invalid signature"}',
       "signature header $name: the module's answer");
}

# a NUL byte in a header is refused by nginx itself, before the module
{
    my $before = () = $t->error_log =~ /webhook refused: invalid signature/g;
    my $res = $t->http(method => 'POST', path => '/webhook',
        headers => [ 'Content-Type' => 'application/json',
                     'X-Signature' => substr($good, 0, 10) . "\0" . substr($good, 11) ],
        body => $one);
    is($res && $res->{status}, 400, 'signature header with a NUL: nginx\'s 400');
    like($t->error_log, qr/client sent invalid header line/,
         'signature header with a NUL: refused by nginx');
    my $after = () = $t->error_log =~ /webhook refused: invalid signature/g;
    is($after, $before, 'signature header with a NUL: the module never saw it');
}
is($dbsize->(), 0, 'wrong signatures wrote nothing');

run_cases($t,
    {
        name => 'secret from the file', results => [ tiktok_dlr(id => 'file-1') ],
        sign => $S, expect => { status => 200, json => { accepted => 1 } },
    },
    {
        name => 'the older secret from the file',
        results => [ tiktok_dlr(id => 'file-2') ],
        sign => [ 'sha256', 'file-secret-old' ],
        expect => { status => 200, json => { accepted => 1 } },
    },
    {
        name => 'the comment line is not a secret',
        results => [ tiktok_dlr(id => 'file-3') ],
        sign => [ 'sha256', '# rotated 2026-11' ],
        expect => { status => 401 },
    },
);

my $before = $dbsize->();

# bodies that are refused whole: 400, nothing written
my @bad = (
    [ 'truncated JSON', '{"results":[{"messageId":"t-1","seenAt":"x"}' ],
    [ 'trailing garbage', '{"results":[]} x' ],
    [ 'two documents', '{"results":[]}{"results":[]}' ],
    [ 'NUL byte', qq({"results":[{"messageId":"n\0-1","seenAt":"x"}]}) ],
    [ 'invalid UTF-8', qq({"results":[{"messageId":"u\xff-1","seenAt":"x"}]}) ],
    [ 'overlong UTF-8', qq({"results":[{"messageId":"u\xc0\xaf-1","seenAt":"x"}]}) ],
    [ 'a lone low surrogate escape', '{"results":[{"messageId":"s\\udc00-1","seenAt":"x"}]}' ],
    [ 'results a string', '{"results":"[]"}' ],
    [ 'results null', '{"results":null}' ],
    [ 'top-level string', '"results"' ],
    [ 'top-level number', '42' ],
    [ 'whitespace only', "  \n " ],
    [ 'deep nesting, 10 000 levels, not closed',
      '{"results":[{"messageId":"deep-1","x":' . ('[' x 10000) ],
    [ 'comments', '{"results":[] /* no */}' ],
    [ 'single quotes', "{'results':[]}" ],
);
for my $c (@bad) {
    my ($name, $body) = @$c;
    my $res = $t->http(method => 'POST', path => '/open',
        headers => [ 'Content-Type' => 'application/json' ], body => $body);
    is($res && $res->{status}, 400, "$name: 400");
    my $j = eval { json_decode($res->{body}) };
    ok($j && $j->{error}, "$name: a JSON error") or diag($res && $res->{body});
}
is($dbsize->(), $before, 'refused bodies wrote nothing');
is($t->redis('EXISTS', "tiktok:msg:{s\xed\xb0\x80-1}"), 0,
   'a lone low surrogate is not stored as its CESU bytes');

# a lone high surrogate: yajl may refuse it or replace it; either way what is
# stored is valid UTF-8 (no encoded surrogate), so every later JSON answer
# that shows it is valid too.  A pair is one character.
{
    my %keys = map { $_ => 1 } @{ $t->redis('KEYS', '*') };
    my $res = $t->http(method => 'POST', path => '/open',
        headers => [ 'Content-Type' => 'application/json' ],
        body => '{"results":[{"messageId":"s\\ud800-2","seenAt":"x"}]}');
    my @new = grep { !$keys{$_} && /^tiktok:msg:/ } @{ $t->redis('KEYS', '*') };
    ok($res && ($res->{status} == 400 && @new == 0
                || $res->{status} == 200 && @new == 1),
       'a lone high surrogate escape: refused, or stored once')
        or diag($res && $res->{raw});
    for my $k (@new) {
        my $chars = $k;
        ok(utf8::decode($chars) && $chars !~ /[\x{d800}-\x{dfff}]/,
           'a lone high surrogate escape: stored as valid UTF-8')
            or diag(unpack 'H*', $k);
    }
    run_cases($t, {
        name => 'a surrogate pair escape', path => '/open',
        body => '{"results":[{"messageId":"s\\ud800\\udc00-3","seenAt":"x"}]}',
        expect => { status => 200, json => { accepted => 1 } },
        redis => [ [ 'EXISTS', "tiktok:msg:{s\xf0\x90\x80\x80-3}" ] => 1 ],
    });
}

# odd but valid bodies: the contract's answer for each result
run_cases($t,
    {
        name => 'deep nesting inside a result, closed', path => '/open',
        body => '{"results":[{"messageId":"deep-2","seenAt":"2019-11-09T16:00:05.000+0000","x":'
              . ('[' x 10000) . (']' x 10000) . '}]}',
        expect => { status => 200, json => { accepted => 1 } },
        redis => [ [ 'HGET', 'tiktok:msg:{deep-2}', 'status' ] => 'SEEN' ],
    },
    {
        name => 'numbers where strings belong', path => '/open',
        body => '{"results":[{"messageId":12345,"seenAt":"x"},'
              . '{"messageId":"num-2","seenAt":17},'
              . '{"messageId":"num-3","status":{"groupName":3,"groupId":"3","id":"5","name":6}}]}',
        expect => { status => 200, json => { accepted => 0, rejected => [
            { index => 0, error => 'messageId is not a string' },
            { index => 1, error => 'neither a delivery nor a seen report' },
            { index => 2, error => 'unknown status group' } ] } },
        redis => [ [ 'EXISTS', 'tiktok:msg:{num-2}' ] => 0,
                   [ 'EXISTS', 'tiktok:msg:{num-3}' ] => 0 ],
    },
    {
        name => 'strings where objects belong', path => '/open',
        body => '{"results":[{"messageId":"obj-1","status":"DELIVERED"},'
              . '{"messageId":"obj-2","status":{"groupId":3},"error":"bad"}]}',
        expect => { status => 200, json => { accepted => 1, rejected => [
            { index => 0, error => 'status is not an object' } ] } },
        redis => [ [ 'HGET', 'tiktok:msg:{obj-2}', 'status' ] => 'DELIVERED',
                   [ 'HGET', 'tiktok:msg:{obj-2}', 'errorName' ] => 'NO_ERROR' ],
    },
    {
        name => 'duplicate keys: the last wins', path => '/open',
        body => '{"results":[{"messageId":"dupkey-1","messageId":"dupkey-2",'
              . '"seenAt":"2019-11-09T16:00:05.000+0000"}]}',
        expect => { status => 200, json => { accepted => 1 } },
        redis => [ [ 'EXISTS', 'tiktok:msg:{dupkey-1}' ] => 0,
                   [ 'HGET', 'tiktok:msg:{dupkey-2}', 'status' ] => 'SEEN' ],
    },
    {
        name => 'escaped NUL in a messageId', path => '/open',
        body => '{"results":[{"messageId":"nul\u0000-1","seenAt":"x"}]}',
        expect => { status => 200, json => { accepted => 1 } },
        redis => [ [ 'HGET', "tiktok:msg:{nul\0-1}", 'status' ] => 'SEEN' ],
    },
    {
        name => 'a huge string (1 MB callbackData)', path => '/open',
        results => [ tiktok_dlr(id => 'huge-1', callbackData => 'x' x (1 << 20)) ],
        expect => { status => 200, json => { accepted => 1 } },
        redis => [ [ 'HSTRLEN', 'tiktok:msg:{huge-1}', 'callbackData' ] => 1 << 20 ],
    },
    {
        name => 'an empty messageId', path => '/open',
        body => '{"results":[{"messageId":"","seenAt":"x"}]}',
        expect => { status => 200, json => { accepted => 0, rejected => [
            { index => 0, error => 'missing messageId' } ] } },
    },
    {
        name => 'results empty', path => '/open', body => '{"results":[]}',
        expect => { status => 200, body => '{"accepted":0,"duplicates":0,"rejected":[]}' },
    },
    {
        name => 'body over client_max_body_size', path => '/tiny',
        results => [ map { tiktok_dlr(id => "tiny-$_") } 1 .. 5 ],
        expect => { status => 413 },
        redis => [ [ 'EXISTS', 'tiktok:msg:{tiny-1}' ] => 0 ],
    },
);

# 2500 results in one body, signed, through the temp file
{
    my @r = map { tiktok_seen(id => "many-$_") } 1 .. 2500;
    run_cases($t, {
        name => '2500 results', results => \@r, sign => $S,
        expect => { status => 200,
                    body => '{"accepted":2500,"duplicates":0,"rejected":[]}' },
        redis => [ [ 'HGET', 'tiktok:msg:{many-2500}', 'status' ] => 'SEEN' ],
    });
}

# the workers survived all of it
my $ping = $t->http(method => 'POST', path => '/open',
    headers => [ 'Content-Type' => 'application/json' ],
    body => json_encode({ results => [ tiktok_seen(id => 'after-1') ] }));
is($ping->{status}, 200, 'still serving afterwards');

$t->stop_nginx;
$t->check_logs;

done_testing;
