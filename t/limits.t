#!/usr/bin/perl
# Limits on what one body can cost: more results than
# tiktok_reports_max_results get 413 before anything is stored; rejected
# results are logged in one line per body; nothing from a request can
# forge a log line.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use TikTokTest;

# the forged line is in the log, escaped, inside an [info] line
my $t = TikTokTest->new(allow_log => qr/forged line/);
$t->start_redis;
$t->start_nginx(http => "    tiktok_reports_redis_timeout 5s;\n",
                server => <<'EOF');
        location = /webhook {
            tiktok_reports_webhook;
            tiktok_reports_signature hmac-sha256;
            tiktok_reports_secret s;
            client_max_body_size 4m;
        }
        location = /open {
            tiktok_reports_webhook;
            tiktok_reports_signature off;
            client_max_body_size 4m;
        }
        location = /three {
            tiktok_reports_webhook;
            tiktok_reports_signature off;
            tiktok_reports_max_results 3;
        }
        location = /three-signed {
            tiktok_reports_webhook;
            tiktok_reports_signature hmac-sha256;
            tiktok_reports_secret s;
            tiktok_reports_max_results 3;
        }
        location /outer/ {
            tiktok_reports_max_results 2;
            location = /outer/inner {
                tiktok_reports_webhook;
                tiktok_reports_signature off;
            }
        }
EOF

my $S = [ 'sha256', 's' ];
my $empty = [ [ 'DBSIZE' ] => 0 ];
my $flush = [ [ 'FLUSHALL' ] ];
my @json = ('Content-Type' => 'application/json');

sub seen { tiktok_seen(id => $_[0]) }
sub seens { my ($p, $n) = @_; map { seen("$p-$_") } 1 .. $n }

# the error.log lines written by one request
sub logged {
    my ($req) = @_;
    my $before = length $t->error_log;
    my $res = $req->();
    return ($res, [ split /\n/, substr($t->error_log, $before) ]);
}

sub post {
    my ($path, $body, @h) = @_;
    return $t->http(method => 'POST', path => $path, body => $body,
                    headers => [ @json, @h ]);
}

# --- the number of results --------------------------------------------

run_cases($t,
    {
        name => 'one over a location\'s limit', path => '/three',
        before => $flush, results => [ seens('over', 4) ],
        expect => { status => 413,
                    body => '{"error":"too many results","max":3}',
                    headers => { 'Content-Type' => 'application/json' } },
        redis => $empty,
    },
    {
        name => 'far over it, not objects', path => '/three',
        results => [ (0) x 1000 ],
        expect => { status => 413,
                    body => '{"error":"too many results","max":3}' },
        redis => $empty,
    },
    {
        name => 'exactly at the limit', path => '/three',
        results => [ seens('at', 3) ],
        expect => { status => 200,
                    body => '{"accepted":3,"duplicates":0,"rejected":[]}' },
        redis => [ [ 'DBSIZE' ] => 4,    # and the change feed
                   [ 'HGET', 'tiktok:msg:{at-3}', 'status' ] => 'SEEN' ],
    },
    {
        name => 'at the limit, rejected ones count', path => '/three',
        before => $flush, results => [ seen('mixed-1'), 0, {} ],
        expect => { status => 200, json => { accepted => 1, rejected => [
            { index => 1, error => 'result is not an object' },
            { index => 2, error => 'missing messageId' } ] } },
    },
    {
        name => 'inherited from the outer location', path => '/outer/inner',
        before => $flush, results => [ seens('outer', 3) ],
        expect => { status => 413,
                    body => '{"error":"too many results","max":2}' },
        redis => $empty,
    },
    {
        name => 'inherited, at the limit', path => '/outer/inner',
        results => [ seens('outer', 2) ],
        expect => { status => 200, json => { accepted => 2 } },
    },
    {
        name => 'arrays outside "results" are not results', path => '/three',
        before => $flush,
        body => '{"other":[0,0,0,0,0,0],"results":[{"messageId":"x-1",'
              . '"seenAt":"2019-11-09T16:00:05.000+0000","list":[1,2,3,4,5]}]}',
        expect => { status => 200, json => { accepted => 1 } },
    },

    # order of checks: signature, then JSON, then the number of results
    {
        name => 'too many with a wrong signature: 401', path => '/three-signed',
        before => $flush, results => [ seens('sig', 4) ],
        sign => [ 'sha256', 'not-s' ],
        expect => { status => 401, body => '{"error":"invalid signature"}' },
        redis => $empty,
    },
    {
        name => 'too many, signed: 413', path => '/three-signed',
        results => [ seens('sig', 4) ], sign => $S,
        expect => { status => 413,
                    body => '{"error":"too many results","max":3}' },
        redis => $empty,
    },
    {
        name => 'invalid JSON before the limit is reached: 400',
        path => '/three', body => '{"results":[0,0,x',
        expect => { status => 400, like => qr/invalid JSON at byte \d+: lexical error/ },
    },
    {
        name => 'invalid JSON after the limit is passed: 413 (parsing stops)',
        path => '/three', body => '{"results":[0,0,0,0,x',
        expect => { status => 413,
                    body => '{"error":"too many results","max":3}' },
    },
);

# the default, 10 000, on a signed location, with bodies that are in a temp
# file; the refused one is stored nowhere
{
    my $tiny = sub {
        json_encode({ results => [ map {
            { messageId => "d-$_", seenAt => '2019-11-09T16:00:05.000+0000' }
        } 1 .. $_[0] ] });
    };
    run_cases($t,
        {
            name => 'default limit: 10 001 results', before => $flush,
            path => '/webhook', body => $tiny->(10001), sign => $S,
            expect => { status => 413,
                        body => '{"error":"too many results","max":10000}' },
            redis => [ [ 'DBSIZE' ] => 0,
                       [ 'EXISTS', 'tiktok:msg:{d-1}' ] => 0 ],
        },
    );
}

# a refusal for size is one line, at info (client-caused)
{
    my ($res, $lines) = logged(sub { post('/three', '{"results":[0,0,0,0]}') });
    is($res->{status}, 413, 'refused for size');
    my @w = grep { /\[info\]/ } @$lines;
    is(scalar @w, 1, 'one line logged for it') or diag explain $lines;
    like($w[0] // '', qr/tiktok_reports: webhook body refused: more than 3 results/,
         'the line says why');
}

# --- rejected results: one line per body ----------------------------------

# the default limit exactly, every result rejected
{
    my $b = json_encode({ results => [ (0) x 10000 ] });
    my ($res, $lines) = logged(sub {
        post('/webhook', $b, 'X-Signature' => hmac_hex('sha256', 's', $b));
    });
    is($res->{status}, 200, 'default limit: 10 000 results, 200');
    my $j = eval { json_decode($res->{body}) } || {};
    is(scalar @{ $j->{rejected} || [] }, 10000, 'all listed in the answer');
    my @r = grep { /rejected/ } @$lines;
    is(scalar @r, 1, 'one log line for 10 000 rejected results')
        or diag scalar(@r) . ' lines';
    like($r[0] // '', qr/\[info\] .*tiktok_reports: 10000 of 10000 results rejected: /,
         'at info, with the count');
    like($r[0] // '', qr/: result 0: result is not an object; result 1: result is not an object; result 2: result is not an object; \.\.\.,/,
         'the first three, then "..."');
    unlike($r[0] // '', qr/result 3:/, 'no fourth one');
}

# parser and Redis refusals in the same line, in order of index
{
    $t->redis('FLUSHALL');
    $t->redis('SET', 'tiktok:msg:{str-1}', 'not a hash');
    my ($res, $lines) = logged(sub {
        post('/open', json_encode({ results => [
            seen('ok-1'), { messageId => 'neither-1' }, seen('str-1'),
            {}, seen('ok-2'), 0 ] }));
    });
    is($res->{status}, 200, 'mixed body: 200');
    my $j = eval { json_decode($res->{body}) } || {};
    is($j->{accepted}, 2, 'mixed body: two accepted');
    is_deeply([ map { $_->{index} } @{ $j->{rejected} || [] } ], [ 1, 2, 3, 5 ],
              'mixed body: four listed');
    my @r = grep { /rejected/ } @$lines;
    is(scalar @r, 1, 'mixed body: one log line') or diag explain \@r;
    like($r[0] // '', qr/tiktok_reports: 4 of 6 results rejected: result 1: neither a delivery nor a seen report, messageId "neither-1"; result 2: the message's Redis key is not a hash, messageId "str-1"; result 3: missing messageId; \.\.\.,/,
         'mixed body: the count, then the first three with messageIds');
    is($t->redis('GET', 'tiktok:msg:{str-1}'), 'not a hash',
       'the key of another type is untouched');
}

{
    my ($res, $lines) = logged(sub { post('/open', json_encode({ results =>
        [ seen('fine-1') ] })) });
    is($res->{status}, 200, 'nothing rejected: 200');
    is(scalar(grep { /rejected/ } @$lines), 0, 'nothing rejected: no line');
}

# --- nothing from a request forges a log line ----------------------------

{
    # JSON escapes in the body: \n, \r, \u001b, \", \\, é, U+2028, DEL
    my $body = '{"results":['
        . '{"messageId":"\n2026/12/02 00:00:00 [emerg] 1#1: forged line"},'
        . '{"messageId":"cr\r\u001b[31m\"q\"\\\\ \u00e9\u2028\u007f"},'
        . '{"messageId":"' . ('L' x 1000) . '"}]}';
    my ($res, $lines) = logged(sub { post('/open', $body) });
    is($res->{status}, 200, 'forged messageIds: 200');
    my $log = $t->error_log;
    unlike($log, qr{^2026/12/02 00:00:00 \[emerg\]}m,
           'no line of the log starts with the forged text');
    my @r = grep { /rejected/ } @$lines;
    is(scalar @r, 1, 'forged messageIds: one line');
    like($r[0] // '', qr{messageId "\\x0A2026/12/02 00:00:00 \[emerg\] 1#1: forged line"},
         'the newline is written \x0A');
    like($r[0] // '',
         qr{messageId "cr\\x0D\\x1B\[31m\\x22q\\x22\\x5C \\xC3\\xA9\\xE2\\x80\\xA8\\x7F"},
         'control characters, quotes, backslashes, non-ASCII and DEL escaped');
    like($r[0] // '', qr{messageId "L{60,80}\.\.\."}, 'a long messageId is cut');
    ok(length($r[0] // '') < 600, 'the line stays short')
        or diag length $r[0];
}

# a body refused as invalid: the reason logged on one line
{
    my ($res, $lines) = logged(sub {
        post('/open', qq({"results":[{"messageId":"a\nb"}]}));
    });
    is($res->{status}, 400, 'a raw newline in a string: 400');
    my @w = grep { /webhook body refused/ } @$lines;
    is(scalar @w, 1, 'logged on one line');
    like($w[0] // '', qr/refused: invalid JSON at byte \d+: [^\n]*, client:/,
         'with the reason and nginx\'s context on the same line');
}

my $ping = post('/three', json_encode({ results => [ seen('after-1') ] }));
is($ping && $ping->{status}, 200, 'still serving afterwards');

$t->stop_nginx;
$t->check_logs;

# --- nginx -t ------------------------------------------------------------

my $c = TikTokTest->new;
for my $case (
    [ 'zero', 'tiktok_reports_max_results 0;',
      qr/"tiktok_reports_max_results" directive must be at least 1/ ],
    [ 'garbage', 'tiktok_reports_max_results lots;',
      qr/"tiktok_reports_max_results" directive invalid number/ ],
    [ 'negative', 'tiktok_reports_max_results -5;',
      qr/"tiktok_reports_max_results" directive invalid number/ ],
    [ 'two values', 'tiktok_reports_max_results 1 2;',
      qr/invalid number of arguments in "tiktok_reports_max_results"/ ],
) {
    my ($name, $line, $re) = @$case;
    my ($rc, $out) = $c->nginx_test_conf(server => <<"EOF");
        location = /w {
            tiktok_reports_webhook;
            tiktok_reports_signature off;
            $line
        }
EOF
    isnt($rc, 0, "max_results $name: refused by nginx -t");
    like($out, $re, "max_results $name: the message names the directive")
        or diag $out;
}

{
    my ($rc, $out) = $c->nginx_test_conf(
        http => "    tiktok_reports_max_results 2000;\n",
        server => <<'EOF');
        tiktok_reports_max_results 100;
        location = /w {
            tiktok_reports_webhook;
            tiktok_reports_signature off;
            tiktok_reports_max_results 1;
        }
EOF
    is($rc, 0, 'max_results in http, server and location: accepted')
        or diag $out;
}

done_testing;
