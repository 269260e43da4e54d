#!/usr/bin/perl
# What the docs promise and no other file checks: the Content-Types taken as
# JSON, where secrets come from (file and directive, trailing spaces, at most
# 16, a reload), lookups at their limits and with odd bytes, the Redis
# layout (callbackData, TTL, the kept report), the counters for 405, 415,
# 500 and timeouts, and the log lines "up again", "did not answer in time"
# and "reloading".

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use POSIX ();
use Time::HiRes qw(sleep time);
use TikTokTest;

# the 500s below come from nginx's temp file that workers cannot create
my $t = TikTokTest->new(allow_log => qr{/noaccess/\d+" failed \(13: });
my $dir = $t->dir;

sub write_file {
    my ($name, $text) = @_;
    open my $fh, '>', "$dir/$name" or die "$name: $!";
    print $fh $text;
    close $fh;
}

write_file('secrets', "file-one\nfile-trail \t \r\n");
my @sixteen = map { "s16-$_" } 1 .. 16;

$t->start_redis;
$t->start_nginx(http => "    tiktok_reports_redis_timeout 5s;\n",
                server => <<"EOF");
        large_client_header_buffers 4 32k;
        location = /open {
            tiktok_reports_webhook;
            tiktok_reports_signature off;
        }
        location = /both {
            tiktok_reports_webhook;
            tiktok_reports_signature hmac-sha256;
            tiktok_reports_secret_file $dir/secrets;
            tiktok_reports_secret directive-one;
        }
        location = /sixteen {
            tiktok_reports_webhook;
            tiktok_reports_signature hmac-sha1;
@{[ join '', map { "            tiktok_reports_secret $_;\n" } @sixteen ]}
        }
        location = /ttl {
            tiktok_reports_webhook;
            tiktok_reports_signature off;
            tiktok_reports_ttl 1000;
            tiktok_reports_key_prefix "ttl:";
        }
        location = /keep {
            tiktok_reports_webhook;
            tiktok_reports_signature off;
            tiktok_reports_keep_reports on;
            tiktok_reports_key_prefix "keep:";
        }
        location = /w500 {
            client_body_temp_path $dir/noaccess;
            client_body_buffer_size 1k;
            tiktok_reports_webhook;
            tiktok_reports_signature off;
        }
        location /st500/ {
            client_body_temp_path $dir/noaccess;
            client_body_buffer_size 1k;
            tiktok_reports_status;
        }
        location = /slow {
            tiktok_reports_webhook;
            tiktok_reports_signature off;
        }
        location /quick/ {
            tiktok_reports_redis_timeout 300ms;
            tiktok_reports_status;
        }
        location /st/ {
            tiktok_reports_status;
        }
        location = /metrics {
            tiktok_reports_metrics;
        }
EOF

my @json = ('Content-Type' => 'application/json');

sub post {
    my ($path, @results) = @_;
    return $t->http(method => 'POST', path => $path, headers => [ @json ],
                    body => json_encode({ results => \@results }));
}

sub metrics {
    my $r = $t->http(path => '/metrics');
    my %m = map { /^(\S+) (\S+)$/ ? ($1 => $2) : () }
            grep { !/^#/ } split /\n/, $r->{body};
    return \%m;
}

sub requests {
    my ($m, $loc, $code) = @_;
    return $m->{"tiktok_reports_requests_total{location=\"$loc\",code=\"$code\"}"};
}

sub seen { tiktok_seen(id => $_[0]) }

# --- Content-Type ---------------------------------------------------------

my $n = 0;
run_cases($t, map {
    my ($type, $status) = @$_;
    my $id = 'ct-' . ++$n;
    {
        name => 'Content-Type ' . ($type // 'absent'), path => '/open',
        results => [ seen($id) ],
        (defined $type ? (headers => [ 'Content-Type' => $type ])
                       : (no_content_type => 1)),
        expect => { status => $status,
                    ($status == 415
                     ? (body => '{"error":"Content-Type must be application/json"}')
                     : (json => { accepted => 1 })) },
        redis => [ [ 'EXISTS', "tiktok:msg:{$id}" ] => $status == 200 ? 1 : 0 ],
    }
} (
    [ 'application/vnd.infobip+json', 200 ],
    [ 'application/problem+json; charset=utf-8', 200 ],
    [ 'Application/Vnd.Api+JSON', 200 ],
    [ 'APPLICATION/JSON', 200 ],
    [ 'application/json ; charset=utf-8', 200 ],
    [ undef, 200 ],
    [ 'application/+json', 415 ],
    [ 'text/json', 415 ],
    [ 'text/plain+json', 415 ],
    [ 'application/jsonp', 415 ],
    [ 'application/json-seq', 415 ],
    [ 'application/x-www-form-urlencoded', 415 ],
    [ '', 415 ],
));

# --- secrets --------------------------------------------------------------

sub signed {
    my ($path, $alg, $secret, $id) = @_;
    my $body = json_encode({ results => [ seen($id) ] });
    my $r = $t->http(method => 'POST', path => $path, body => $body,
        headers => [ @json, 'X-Signature' => hmac_hex($alg, $secret, $body) ]);
    return $r ? $r->{status} : 0;
}

is(signed('/both', 'sha256', 'file-one', 'sec-1'), 200,
   'a secret from the file, beside a directive');
is(signed('/both', 'sha256', 'directive-one', 'sec-2'), 200,
   'the directive, beside the file: they add up');
is(signed('/both', 'sha256', 'file-trail', 'sec-3'), 200,
   'trailing spaces, a tab and \r are not part of a secret from the file');
is(signed('/both', 'sha256', "file-trail \t ", 'sec-4'), 401,
   '... so the secret with them is not one');
is(signed('/sixteen', 'sha1', $sixteen[15], 'sec-5'), 200,
   '16 secrets: the 16th is accepted');
is(signed('/sixteen', 'sha1', $sixteen[0], 'sec-6'), 200,
   '16 secrets: the first is accepted');
is(signed('/sixteen', 'sha1', 's16-17', 'sec-7'), 401,
   '16 secrets: another is not');

{
    my $c = TikTokTest->new;
    my $loc = sub {
        my ($k) = @_;
        "location = /w { tiktok_reports_webhook; tiktok_reports_signature hmac-sha256;\n"
        . join('', map { "tiktok_reports_secret k$_;\n" } 1 .. $k) . "}\n";
    };
    my ($rc, $out) = $c->nginx_test_conf(server => $loc->(17));
    isnt($rc, 0, '17 secrets: refused by nginx -t');
    like($out, qr/"tiktok_reports_secret": too many secrets \(at most 16\)/,
         '17 secrets: the message says so') or diag $out;
    ($rc, $out) = $c->nginx_test_conf(server => $loc->(16));
    is($rc, 0, '16 secrets: nginx -t passes') or diag $out;
}

# --- lookups --------------------------------------------------------------

{
    post('/open', map { seen("lk-$_") } 1 .. 3);
    my $r = $t->http(path => '/st/?' . join '&', map { "id=lk-$_" } 1 .. 1000);
    is($r->{status}, 200, 'GET with 1000 ids: 200');
    my $j = eval { json_decode($r->{body}) } || {};
    is(scalar @{ $j->{results} || [] }, 1000, 'GET with 1000 ids: 1000 answers');
    is(scalar(grep { $_->{found} } @{ $j->{results} || [] }), 3,
       'GET with 1000 ids: the three known found');

    $r = $t->http(path => '/st/?' . join '&', map { "id=lk-$_" } 1 .. 1001);
    is($r->{status}, 400, 'GET with 1001 ids: 400');
    is($r->{body}, '{"error":"more than 1000 ids"}', 'GET with 1001 ids: why');
}

run_cases($t,
    {
        name => 'an empty id among others', method => 'GET',
        path => '/st/?id=lk-1&id=',
        expect => { status => 400, body => '{"error":"empty messageId"}' },
    },
    {
        name => 'arguments that are not ids, no id in the path', method => 'GET',
        path => '/st/?ids=lk-1&xid=2',
        expect => { status => 400, body => '{"error":"no messageId"}' },
    },
    {
        name => 'arguments that are not ids, an id in the path', method => 'GET',
        path => '/st/lk-1?ids=x',
        expect => { status => 200, json => { messageId => 'lk-1', status => 'SEEN' } },
    },
    {
        name => 'odd bytes in a path id: still JSON', method => 'GET',
        path => '/st/%FF%0A%22%5C%01',
        expect => { status => 404,
                    body => '{"error":"unknown messageId",'
                          . '"messageId":"\ufffd\n\"\\\\\u0001"}' },
    },
    {
        name => 'odd bytes in a batch id: still JSON', method => 'GET',
        path => '/st/?id=%FF%0A&id=%C3%A9',
        expect => { status => 200,
                    body => '{"results":[{"messageId":"\ufffd\n","found":false},'
                          . qq({"messageId":"\xc3\xa9","found":false}]}) },
    },
    {
        name => 'POST: a repeated "ids", the last one counts', method => 'POST',
        path => '/st/', body => '{"ids":["lk-1"],"x":{"ids":[1]},"ids":["lk-2","nope"]}',
        expect => { status => 200, json => { results => [
            { messageId => 'lk-2', found => JSON::PP::true },
            { messageId => 'nope', found => JSON::PP::false } ] } },
    },
    map({
        my ($body, $error) = @$_;
        {
            name => "POST $body", method => 'POST', path => '/st/', body => $body,
            expect => { status => 400, body => qq({"error":"$error"}) },
        }
    } (
        [ '{"ids":null}', 'ids is not an array' ],
        [ '{"ids":true}', 'ids is not an array' ],
        [ '{"ids":{"a":1}}', 'ids is not an array' ],
        [ '{"ids":[null]}', 'ids must be strings' ],
        [ '{"ids":[["a"]]}', 'ids must be strings' ],
        [ '{"ids":[{"a":1}]}', 'ids must be strings' ],
        [ '{"ids":[""]}', 'empty messageId' ],
        [ '{"ids":["a"]', 'body must be {\"ids\":[...]}' ],
        [ '{"other":1,"list":[1,{"a":[true,null]}]}', 'no ids array' ],
    )),
);

# what is stored is shown as valid JSON whatever its bytes: fields Redis got
# from elsewhere (another writer, an older version) included
{
    my $key = "tiktok:msg:{raw\xff}";
    $t->redis('HSET', $key, 'status', "SEEN\xff", 'statusName', "a\"b\\c\x01",
              'errorPermanent', 'maybe', 'updatedAt', '12ab',
              'timeline', "{\"kind\":\"seen\"}\nnot an object\n\n{broken",
              'delivery', 'not an object', 'seen', '{"kept":1}',
              'unknownField', 'ignored', 'callbackData', "\xc3\x28");
    my $r = $t->http(path => '/st/raw%FF');
    is($r->{status}, 200, 'odd stored values: 200');
    my $j = eval { json_decode($r->{body}) };
    ok($j, 'odd stored values: valid JSON') or diag $r->{body};
    is_deeply($j, {
        messageId => "raw\x{fffd}", status => "SEEN\x{fffd}",
        statusName => "a\"b\\c\x01", errorPermanent => 'maybe',
        updatedAt => '12ab', callbackData => "\x{fffd}(",
        timeline => [ { kind => 'seen' }, 'not an object', '{broken' ],
        delivery => 'not an object', seen => { kept => 1 },
    }, 'odd stored values: each shown as a string, our objects as objects');

    $t->redis('HSET', 'tiktok:msg:{perm-raw}', 'status', 'REJECTED',
              'errorPermanent', 'true', 'updatedAt', '1764064335123');
    $j = json_decode($t->http(path => '/st/perm-raw')->{body});
    ok(JSON::PP::is_bool($j->{errorPermanent}) && $j->{errorPermanent},
       'errorPermanent "true" is rendered as JSON true');
    is($j->{updatedAt}, 1764064335123, 'updatedAt is rendered as a number');
}

# errorPermanent:true as the webhook stores it
{
    post('/open', tiktok_dlr(id => 'perm-1', group => 'REJECTED', status_id => 6,
                              name => 'REJECTED_NETWORK', permanent => 1));
    my $r = $t->http(path => '/st/perm-1');
    like($r->{body}, qr/"errorPermanent":true[,}]/, 'a permanent error: true, unquoted');
    $r = $t->http(path => '/st/?id=perm-1');
    like($r->{body}, qr/"errorPermanent":true[,}]/, '... in a batch too');
}

# --- the Redis layout -----------------------------------------------------

# callbackData: from the last report that carried one, whatever its rank
{
    my $id = 'cb-1';
    my $cb = sub { my ($r, $v) = @_; $r->{callbackData} = $v if defined $v; $r };
    my @steps = (
        [ $cb->(tiktok_dlr(id => $id, group => 'PENDING', status_id => 7,
                           name => 'PENDING_ENROUTE',
                           doneAt => '2023-09-26T10:52:10.000+0000'), 'first'), 'first' ],
        [ tiktok_dlr(id => $id), 'first' ],
        [ $cb->(seen($id), 'from-seen'), 'from-seen' ],
        [ $cb->(tiktok_dlr(id => $id, group => 'EXPIRED', status_id => 15,
                           name => 'EXPIRED_EXPIRED',
                           doneAt => '2023-09-28T10:52:15.000+0000'), 'late'), 'late' ],
        [ $cb->(tiktok_dlr(id => $id, group => 'EXPIRED', status_id => 15,
                           name => 'EXPIRED_EXPIRED',
                           doneAt => '2023-09-28T10:52:15.000+0000'), 'repeat'), 'late' ],
    );
    my $i = 0;
    for my $s (@steps) {
        my ($report, $want) = @$s;
        post('/open', $report);
        is($t->redis('HGET', "tiktok:msg:{$id}", 'callbackData'), $want,
           'callbackData after report ' . ++$i . ": $want");
    }
    is($t->redis('HGET', "tiktok:msg:{$id}", 'status'), 'SEEN',
       'callbackData: the status is unaffected');
}

# the TTL: refreshed by every write, not by a repeat that writes nothing
{
    my $key = 'ttl:msg:{ttl-1}';
    post('/ttl', tiktok_dlr(id => 'ttl-1'));
    my $ttl = $t->redis('TTL', $key);
    ok($ttl > 990 && $ttl <= 1000, "TTL set by the first write ($ttl)");
    $t->redis('EXPIRE', $key, 50);
    post('/ttl', tiktok_dlr(id => 'ttl-1'));
    $ttl = $t->redis('TTL', $key);
    ok($ttl <= 50, "a repeat writes nothing and leaves the TTL ($ttl)");
    post('/ttl', seen('ttl-1'));
    $ttl = $t->redis('TTL', $key);
    ok($ttl > 990, "a change of status refreshes it ($ttl)");
    $t->redis('EXPIRE', $key, 50);
    post('/ttl', tiktok_dlr(id => 'ttl-1', status_id => 2,
                            name => 'DELIVERED_TO_OPERATOR',
                            doneAt => '2023-09-26T10:52:11.000+0000'));
    $ttl = $t->redis('TTL', $key);
    ok($ttl > 990, "an event that changes no status refreshes it too ($ttl)");
}

# keep_reports: the delivery report kept is the one that holds the details
{
    my $key = 'keep:msg:{kept-1}';
    my %ev = (
        operator => tiktok_dlr(id => 'kept-1', status_id => 2,
                               name => 'DELIVERED_TO_OPERATOR',
                               doneAt => '2023-09-26T10:52:11.000+0000'),
        handset  => tiktok_dlr(id => 'kept-1', status_id => 5,
                               name => 'DELIVERED_TO_HANDSET',
                               doneAt => '2023-09-26T10:52:12.000+0000'),
        expired  => tiktok_dlr(id => 'kept-1', group => 'EXPIRED',
                               status_id => 15, name => 'EXPIRED_EXPIRED',
                               doneAt => '2023-09-28T10:52:15.000+0000'),
        seen1    => tiktok_seen(id => 'kept-1'),
        seen2    => tiktok_seen(id => 'kept-1',
                                seenAt => '2023-09-27T10:00:00.000+0000'),
    );
    my $kept = sub {
        my $h = $t->hgetall($key);
        return (map { defined $h->{$_} ? json_decode($h->{$_}) : undef }
                qw(delivery seen));
    };
    for my $step ([ operator => 'operator' ], [ handset => 'handset' ],
                  [ operator => 'handset' ], [ expired => 'handset' ]) {
        my ($send, $want) = @$step;
        post('/keep', $ev{$send});
        my ($d) = $kept->();
        is_deeply($d, json_decode(json_encode($ev{$want})),
                  "keep_reports: after $send, the $want report is kept");
    }
    post('/keep', $ev{seen1});
    post('/keep', $ev{seen2});
    my ($d, $s) = $kept->();
    is_deeply($s, json_decode(json_encode($ev{seen1})),
              'keep_reports: the first seen report is kept');
    is($t->redis('HGET', $key, 'statusName'), 'DELIVERED_TO_HANDSET',
       'keep_reports: the details are those of the kept report');
}

# --- counters and log lines -----------------------------------------------

# 405, 415 and 500 (nginx's own: a temp file its workers may not create)
{
    mkdir "$dir/noaccess";
    chmod 0, "$dir/noaccess";
    my $m0 = metrics();
    $t->http(path => '/open');
    $t->http(method => 'PUT', path => '/open', body => '{}', headers => [ @json ]);
    $t->http(method => 'DELETE', path => '/st/x');
    $t->http(method => 'POST', path => '/open', body => '<x/>',
             headers => [ 'Content-Type' => 'application/xml' ]);
    my $big = json_encode({ results => [ map { seen("big-$_") } 1 .. 50 ] });
    my $r = $t->http(method => 'POST', path => '/w500', body => $big,
                     headers => [ @json ]);
    is($r->{status}, 500, 'a webhook body nginx cannot buffer: 500');
    $r = $t->http(method => 'POST', path => '/st500/', headers => [ @json ],
                  body => json_encode({ ids => [ map { "id-$_" } 1 .. 1000 ] }));
    is($r->{status}, 500, 'a lookup body nginx cannot buffer: 500');
    my $m = metrics();
    my %d = map { my ($l, $c) = @$_;
                  ("$l $c" => requests($m, $l, $c) - requests($m0, $l, $c)) }
            ([ webhook => 405 ], [ webhook => 415 ], [ webhook => 500 ],
             [ status => 405 ], [ status => 500 ], [ webhook => 'other' ]);
    is_deeply(\%d, { 'webhook 405' => 2, 'webhook 415' => 1, 'webhook 500' => 1,
                     'status 405' => 1, 'status 500' => 1, 'webhook other' => 0 },
              'counted: 405, 415 and 500 by location');
    chmod 0755, "$dir/noaccess";
}

# SCRIPT FLUSH: the script is sent again, and that is logged
{
    $t->redis('SCRIPT', 'FLUSH');
    my $r = post('/open', seen('flush-1'));
    is($r->{status}, 200, 'after SCRIPT FLUSH: 200');
    like($t->error_log,
         qr/\[notice\] .*tiktok_reports: redis 127\.0\.0\.1:\d+ lost the script, reloading/,
         'after SCRIPT FLUSH: "lost the script, reloading" at notice');
}

# a lookup with its own short timeout on the connection a webhook with a
# long one waits on: at 300 ms the lookup is answered 503 and counted as a
# timeout, the webhook rides out the 2 s stall, and its round trip is counted
# above 1 s
{
    my $m0 = metrics();
    $t->freeze_redis;
    my $pid = fork();
    die "fork: $!" unless defined $pid;
    if ($pid == 0) {
        my $r = eval { post('/slow', seen('stall-1')) };
        POSIX::_exit($r && $r->{status} == 200 ? 0 : 1);
    }
    sleep 0.2;
    my $t0 = time;
    my $r = $t->http(path => '/quick/stall-1');
    my $took = time - $t0;
    is($r->{status}, 503, 'a lookup on a stalled connection: 503');
    ok($took < ($ENV{TT_VALGRIND} ? 1.8 : 1),
       sprintf('... at its own 300 ms (%.2fs)', $took));
    sleep 2 - (time - $t0) if time - $t0 < 2;
    $t->thaw_redis;
    waitpid $pid, 0;
    is($? >> 8, 0, 'the webhook waited the stall out: 200');
    my $m = metrics();
    is($m->{tiktok_reports_redis_timeouts_total}
       - $m0->{tiktok_reports_redis_timeouts_total}, 1, 'one timeout counted');
    is($m->{tiktok_reports_redis_errors_total}
       - $m0->{tiktok_reports_redis_errors_total}, 0, '... and no Redis error');
    my $b = sub { $_[0]{"tiktok_reports_redis_rtt_seconds_bucket{le=\"$_[1]\"}"} };
    # the lookup's reply came after the stall too, though nobody waited
    is(($b->($m, '+Inf') - $b->($m, '1'))
       - ($b->($m0, '+Inf') - $b->($m0, '1')), 2,
       'the two stalled round trips are counted above 1 s');
    like($t->error_log, qr/\[error\] .*tiktok_reports: redis did not answer in time/,
         '"redis did not answer in time" logged at error');
}

# Redis stopped and started again: "unavailable" once, then "up again"
{
    $t->stop_redis;
    my $r = post('/open', seen('down-1'));
    is($r->{status}, 503, 'Redis stopped: 503');
    $t->start_redis;
    my $st = 0;
    for (1 .. 50) {
        $st = post('/open', seen('down-1'))->{status};
        last if $st == 200;
        sleep 0.1;
    }
    is($st, 200, 'Redis started again: 200');
    my $log = $t->error_log;
    like($log, qr/\[error\] .*tiktok_reports: redis 127\.0\.0\.1:\d+ unavailable: /,
         'the outage is logged at error');
    like($log, qr/\[notice\] .*tiktok_reports: redis 127\.0\.0\.1:\d+ is up again/,
         '"is up again" logged at notice');
}

# a reload picks up a secret file's new content
{
    write_file('secrets', "file-two\n");
    my @old = $t->worker_pids;
    $t->reload_nginx;
    for (1 .. 100) {
        my %old = map { $_ => 1 } @old;
        my @now = $t->worker_pids;
        last if @now && !grep { $old{$_} } @now;
        sleep 0.1;
    }
    is(signed('/both', 'sha256', 'file-two', 'reload-1'), 200,
       'after a reload: the new secret from the file is accepted');
    is(signed('/both', 'sha256', 'file-one', 'reload-2'), 401,
       'after a reload: the removed one is not');
    is(signed('/both', 'sha256', 'directive-one', 'reload-3'), 200,
       'after a reload: the directive is still there');
}

$t->stop_nginx;
$t->check_logs;

done_testing;
