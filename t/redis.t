#!/usr/bin/perl
# Redis as the worker sees it: large bodies through the temp file, Redis
# stopped and back, Redis frozen (503 in time, and the worker keeps
# serving other locations), script cache flushed, AUTH and SELECT.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::HiRes qw(time sleep);
use POSIX ();
use TikTokTest;

# under valgrind a worker is many times slower: 2000 replies need more time
my $timeout = $ENV{TT_VALGRIND} ? 3 : 0.5;

my $t = TikTokTest->new;
$t->start_redis(password => 'pw-1');
$t->start_nginx(http => <<"EOF", server => <<'EOF');
    tiktok_reports_redis_password pw-1;
    tiktok_reports_redis_db 3;
    tiktok_reports_redis_timeout ${\ int($timeout * 1000)}ms;
EOF
        location = /webhook {
            tiktok_reports_webhook;
            tiktok_reports_signature hmac-sha256;
            tiktok_reports_secret k;
            client_body_buffer_size 1k;
            client_max_body_size 10m;
        }
        location = /ping {
            return 200 "pong\n";
        }
EOF

$t->select_db(3);

sub post {
    my (%o) = @_;
    my $body = $o{body} // json_encode({ results => $o{results} });
    return $t->http(method => 'POST', path => '/webhook',
                    timeout => $o{timeout} || 10,
                    headers => [ 'Content-Type' => 'application/json',
                                 'X-Signature' => hmac_hex('sha256', 'k', $body) ],
                    body => $body);
}

# 2000 reports: well over client_body_buffer_size, so read from the temp file
{
    my @r = map { tiktok_dlr(id => "bulk-$_") } 1 .. 2000;
    my $body = json_encode({ results => \@r });
    # the body must be far over client_body_buffer_size for this to test
    # the temp file
    die "test body too small" unless length($body) > 1024 * 1024;
    my $res = post(body => $body, timeout => 30);
    is($res->{body}, '{"accepted":2000,"duplicates":0,"rejected":[]}',
       '2000 reports accepted');
    is($t->redis('HGET', 'tiktok:msg:{bulk-1}', 'status'), 'DELIVERED',
       'first of 2000 stored (db 3, after AUTH)');
    is($t->redis('HGET', 'tiktok:msg:{bulk-2000}', 'status'), 'DELIVERED',
       'last of 2000 stored');
    is($t->redis('DBSIZE'), 2001, '2000 message keys and the feed');
    $res = post(body => $body, timeout => 30);
    is($res->{body}, '{"accepted":0,"duplicates":2000,"rejected":[]}',
       'the same 2000 again are duplicates');
}

# a body's reports go to Redis in calls of up to 100, in order: a report
# sees what an earlier one in the same call wrote, and the answer maps every
# report back to its index across calls
{
    my @r = map { tiktok_dlr(id => "call-$_") } 1 .. 250;
    $r[$_] = { to => 'no id' } for 0, 101, 249;
    $r[5] = tiktok_dlr(id => 'call-3');      # the same call: a duplicate
    $r[6] = tiktok_seen(id => 'call-3');     # the same call: SEEN
    $r[150] = tiktok_dlr(id => 'call-3');    # a later call: a duplicate
    $t->redis('CONFIG', 'RESETSTAT');
    my $res = post(results => \@r);
    my $j = json_decode($res->{body});
    is_deeply([ $j->{accepted}, $j->{duplicates},
                [ map { $_->{index} } @{ $j->{rejected} } ] ],
              [ 245, 2, [ 0, 101, 249 ] ],
              'calls of 100: accepted, duplicates and rejected indices');
    my ($calls) = $t->redis('INFO', 'commandstats')
                  =~ /^cmdstat_evalsha:calls=(\d+)/m;
    is($calls, 3, '247 storable reports: three calls');
    is_deeply([ map { $t->redis('HGET', "tiktok:msg:{call-$_}", 'status') }
                3, 100, 101, 103, 248 ],
              [ 'SEEN', 'DELIVERED', 'DELIVERED', 'DELIVERED', 'DELIVERED' ],
              'calls of 100: reports on both sides of each cut stored');
    is($t->redis('EXISTS', 'tiktok:msg:{call-6}'), 0,
       'calls of 100: the replaced report was not stored');
}

# a message key that something else made a string: that one report is
# refused, the others of its call are stored, and a retry does not loop; a
# hash whose bookkeeping was overwritten still takes new details
{
    $t->redis('SET', 'tiktok:msg:{poison-1}', 'not a hash');
    $t->redis('HSET', 'tiktok:msg:{odd-dg}', 'status', 'DELIVERED',
              'statusName', 'DELIVERED_TO_OPERATOR', 'dg', 'garbage');
    my @r = (tiktok_dlr(id => 'poison-1'), tiktok_dlr(id => 'fine-1'),
             tiktok_dlr(id => 'odd-dg'));
    my $want = '{"accepted":2,"duplicates":0,"rejected":[{"index":0,'
             . '"error":"the message\'s Redis key is not a hash"}]}';
    my $res = post(results => \@r);
    is($res->{status}, 200, 'a string at a message key: 200');
    is($res->{body}, $want, 'a string at a message key: that report rejected');
    is($t->redis('GET', 'tiktok:msg:{poison-1}'), 'not a hash',
       'a string at a message key: left as it was');
    is($t->redis('HGET', 'tiktok:msg:{fine-1}', 'status'), 'DELIVERED',
       'a string at a message key: the next report stored');
    is($t->redis('HGET', 'tiktok:msg:{odd-dg}', 'statusName'),
       'DELIVERED_TO_HANDSET', 'an unreadable dg field: details replaced');
    $res = post(results => \@r);
    is($res->{body}, '{"accepted":0,"duplicates":2,"rejected":[{"index":0,'
                     . '"error":"the message\'s Redis key is not a hash"}]}',
       'a string at a message key: the retry is answered the same way');
}

# the script cache flushed under us: NOSCRIPT, reloaded, answered 200
{
    $t->redis('SCRIPT', 'FLUSH');
    my $res = post(results => [ tiktok_dlr(id => 'noscript-1') ]);
    is($res->{status}, 200, 'NOSCRIPT: the script is sent again');
    is($t->redis('HGET', 'tiktok:msg:{noscript-1}', 'status'), 'DELIVERED',
       'NOSCRIPT: stored');
    $res = post(results => [ tiktok_dlr(id => 'noscript-2') ]);
    is($res->{status}, 200, 'NOSCRIPT: later requests use the cached script');
}

# Redis stopped: 503 with Retry-After; back: 200 without restarting nginx
{
    $t->stop_redis;
    my $res = post(results => [ tiktok_dlr(id => 'down-1') ]);
    is($res->{status}, 503, 'Redis stopped: 503');
    is($res->{body}, '{"error":"status store unavailable"}', 'Redis stopped: body');
    is($res->{headers}{'retry-after'}, '1', 'Redis stopped: Retry-After');
    $res = post(results => [ tiktok_dlr(id => 'down-2') ]);
    is($res->{status}, 503, 'Redis still stopped: 503');

    $t->start_redis(password => 'pw-1');
    my $status;
    for (1 .. 50) {
        $res = post(results => [ tiktok_dlr(id => 'down-1') ]);
        $status = $res->{status};
        last if $status == 200;
        sleep 0.1;
    }
    is($status, 200, 'Redis back: 200 again, nginx not restarted');
    is($t->redis('HGET', 'tiktok:msg:{down-1}', 'status'), 'DELIVERED',
       'Redis back: stored');
}

# Redis frozen: the worker is not blocked, the webhook answers 503 in time
{
    $t->freeze_redis;
    my $start = time;
    my $pid = fork();
    if ($pid == 0) {
        my $res = eval { post(results => [ tiktok_dlr(id => 'frozen-1') ]) };
        # _exit: the harness object of the parent must not be destroyed here
        POSIX::_exit(($res && $res->{status} == 503) ? 0 : 1);
    }
    sleep 0.1;
    my $t0 = time;
    my $ping = $t->http(path => '/ping', timeout => 5);
    my $took = time - $t0;
    is($ping && $ping->{body}, "pong\n",
       'Redis frozen: another location of the one worker answers');
    ok($took < 0.8 * $timeout,
       sprintf('... at once (%.3fs, less than the Redis timeout)',
                            $took));
    waitpid $pid, 0;
    is($? >> 8, 0, 'Redis frozen: the webhook answered 503');
    my $total = time - $start;
    ok($total < $timeout + 2.5,
       sprintf('... within the timeout (%.2fs)', $total));

    $t->thaw_redis;
    my $status;
    for (1 .. 50) {
        my $res = post(results => [ tiktok_dlr(id => 'frozen-2') ]);
        $status = $res->{status};
        last if $status == 200;
        sleep 0.1;
    }
    is($status, 200, 'Redis thawed: 200 again');
}

$t->stop_nginx;
$t->check_logs;

done_testing;
