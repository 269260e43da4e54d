#!/usr/bin/perl
# Redis trouble of every kind ends in 503 (and is logged, and counted), and
# nothing half-done: a SCRIPT LOAD refused by an ACL, a lookup refused by
# an ACL (-NOPERM) or while Redis loads (-LOADING), replies of a shape Redis
# never gives, a connect that fails at once (a unix socket with no Redis
# behind it), no free connection left in the worker (worker_connections);
# and the default address, 127.0.0.1:6379, when this test can own it.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use IO::Socket::INET;
use Time::HiRes qw(sleep time);
use TikTokTest;
use FakeRedis;

my $t = TikTokTest->new(allow_log => qr/worker_connections are not enough/);
my $dir = $t->dir;

my $fake = FakeRedis->new(dir => $dir, reply => sub {
    my ($cmd) = @_;
    my $name = uc $cmd->[0];
    if ($name eq 'HGETALL') {
        my ($what) = $cmd->[1] =~ /\{fake-(\w+)/ or return undef;
        return FakeRedis::error('LOADING Redis is loading the dataset in memory')
            if $what eq 'loading';
        return FakeRedis::integer(5) if $what eq 'integer';
        return FakeRedis::array(map { FakeRedis::bulk($_) }
                                'status', 'SEEN', 'updatedAt', '1', 'dangling')
            if $what eq 'odd';
        # bytes that are no RESP, and a reply nothing asked for
        return "?not resp\r\n" if $what eq 'garbage';
        return FakeRedis::array(FakeRedis::bulk('status'), FakeRedis::bulk('SEEN'))
               . FakeRedis::status('OK') if $what eq 'extra';
        return FakeRedis::array(FakeRedis::bulk('status'), FakeRedis::bulk('SEEN'),
                                FakeRedis::integer(1), FakeRedis::bulk('x'),
                                FakeRedis::bulk('seenAt'), FakeRedis::integer(2),
                                FakeRedis::array(), FakeRedis::array())
            if $what eq 'mixed';
        return FakeRedis::array();
    }
    if ($name eq 'EVALSHA' || $name eq 'EVAL') {
        my ($what) = $cmd->[3] =~ /\{fake-(\w+)/ or return undef;
        my $n = (@$cmd - 9) / 15;   # 9 fixed arguments, 15 per report
        return FakeRedis::array(map { FakeRedis::integer(1) } 1 .. $n + 1)
            if $what eq 'long';
        return FakeRedis::array(map { FakeRedis::bulk('1') } 1 .. $n)
            if $what eq 'strings';
        return FakeRedis::bulk('OK') if $what eq 'bulk';
        return FakeRedis::error('ERR something else') if $what eq 'error';
        return FakeRedis::error('NOSCRIPT No matching script') if $what eq 'noscript';
        return FakeRedis::array(map { FakeRedis::integer($_ % 2 ? -1 : 0) } 1 .. $n)
            if $what eq 'mixed';
        return 'CLOSE' if $what eq 'close';
        return FakeRedis::array(map { FakeRedis::integer(2) } 1 .. $n);
    }
    return undef;
});
my $fport = $fake->port;


$t->start_redis(extra => "unixsocket $dir/redis.sock\nunixsocketperm 777\n"
    . "user noscript on >pw ~* &* +\@all -\@scripting\n"
    . "user nohgetall on >pw ~* &* +\@all -hgetall\n");

$t->start_nginx(http => "    tiktok_reports_redis_timeout 2s;\n",
                server => <<"EOF");
        location = /noscript {
            tiktok_reports_redis_password noscript pw;
            tiktok_reports_webhook;
            tiktok_reports_signature off;
        }
        location /noscript/ {
            tiktok_reports_redis_password noscript pw;
            tiktok_reports_status;
        }
        location = /nohgetall {
            tiktok_reports_redis_password nohgetall pw;
            tiktok_reports_webhook;
            tiktok_reports_signature off;
        }
        location /nohgetall/ {
            tiktok_reports_redis_password nohgetall pw;
            tiktok_reports_status;
        }
        location = /gone {
            tiktok_reports_redis unix:$dir/gone.sock;
            tiktok_reports_webhook;
            tiktok_reports_signature off;
        }
        location = /unix {
            tiktok_reports_redis unix:$dir/redis.sock;
            tiktok_reports_webhook;
            tiktok_reports_signature off;
        }
        location = /fake {
            tiktok_reports_redis 127.0.0.1:$fport;
            tiktok_reports_redis_password fake-user fake-pw;
            tiktok_reports_redis_db 7;
            tiktok_reports_webhook;
            tiktok_reports_signature off;
        }
        location /fake/ {
            tiktok_reports_redis 127.0.0.1:$fport;
            tiktok_reports_redis_password fake-user fake-pw;
            tiktok_reports_redis_db 7;
            tiktok_reports_status;
        }
        location = /metrics {
            tiktok_reports_metrics;
        }
EOF

sub post {
    my ($path, @ids) = @_;
    return $t->http(method => 'POST', path => $path,
                    headers => [ 'Content-Type' => 'application/json' ],
                    body => json_encode({ results => [ map { tiktok_seen(id => $_) } @ids ] }));
}

sub metric {
    my ($name) = @_;
    my $m = $t->http(path => '/metrics');
    return $m && $m->{body} =~ /^\Q$name\E (\d+)$/m ? $1 : undef;
}

my $unavailable = '{"error":"status store unavailable"}';

# an ACL user that may not load scripts: the handshake fails, every request
# on that connection gets 503, and the reason is logged
{
    my $r = post('/noscript', 'acl-1');
    is($r->{status}, 503, 'SCRIPT LOAD refused: the webhook answers 503');
    is($r->{body}, $unavailable, 'SCRIPT LOAD refused: the JSON error');
    is($r->{headers}{'retry-after'}, '1', 'SCRIPT LOAD refused: Retry-After');
    $r = $t->http(path => '/noscript/acl-1');
    is($r->{status}, 503, 'SCRIPT LOAD refused: a lookup on it answers 503 too');
    is($t->redis('EXISTS', 'tiktok:msg:{acl-1}'), 0, 'SCRIPT LOAD refused: nothing stored');
    like($t->error_log,
         qr/\[error\] .*tiktok_reports: redis 127\.0\.0\.1:\d+ unavailable: SCRIPT LOAD refused: NOPERM/,
         'SCRIPT LOAD refused: logged with Redis\'s reason');
    unlike($t->error_log, qr/>pw|\bpw\b.*refused/, '... and without the password');
}

# an ACL user that may not read hashes: the webhook stores, the lookup gets
# -NOPERM and answers 503, counted as a Redis error
{
    my $r = post('/nohgetall', 'acl-2');
    is($r->{status}, 200, 'no HGETALL for the user: the webhook still stores');
    my $errors = metric('tiktok_reports_redis_errors_total');
    $r = $t->http(path => '/nohgetall/acl-2');
    is($r->{status}, 503, '-NOPERM on a lookup: 503');
    is($r->{body}, $unavailable, '-NOPERM on a lookup: the JSON error');
    $r = $t->http(path => '/nohgetall/?id=acl-2&id=acl-1');
    is($r->{status}, 503, '-NOPERM on a batch lookup: 503');
    is(metric('tiktok_reports_redis_errors_total') - $errors, 3,
       '-NOPERM: each refused command counted as a Redis error');
}

# a unix socket with no Redis behind it: the connect fails at once
{
    my $t0 = time;
    my $r = post('/gone', 'gone-1');
    is($r->{status}, 503, 'no socket file: 503');
    ok(time - $t0 < 1, 'no socket file: at once, not at the timeout');
    like($t->error_log,
         qr/\[error\] .*tiktok_reports: redis unix:\Q$dir\E\/gone\.sock unavailable: connect\(\) failed \(2: No such file or directory\)/,
         'no socket file: logged with the reason');
}

# Redis on a unix socket stopped: the socket file is gone, 503 at once;
# started again: 200
{
    is(post('/unix', 'unix-1')->{status}, 200, 'over the unix socket: 200');
    $t->stop_redis;
    my $t0 = time;
    my $r = post('/unix', 'unix-2');
    is($r->{status}, 503, 'Redis stopped: 503');
    ok(time - $t0 < 1, 'Redis stopped: at once');
    sleep 0.3;
    $t0 = time;
    $r = post('/unix', 'unix-3');
    is($r->{status}, 503, 'Redis stopped, a later request: 503');
    ok(time - $t0 < 1, '... at once too');
    $t->start_redis(extra => "unixsocket $dir/redis.sock\nunixsocketperm 777\n");
    my $st = 0;
    for (1 .. 50) {
        $st = post('/unix', 'unix-4')->{status};
        last if $st == 200;
        sleep 0.1;
    }
    is($st, 200, 'Redis started again: 200');
    like($t->error_log, qr/redis unix:\Q$dir\E\/redis\.sock is up again/,
         'Redis started again: "up again"');
}

# replies a real Redis gives only now and then, or never: the handshake
# (AUTH with a user, SELECT) answered, then a lookup refused while loading,
# answers of the wrong type, calls answered with the wrong shape
{
    my $errors = metric('tiktok_reports_redis_errors_total');
    my $r = $t->http(path => '/fake/fake-loading');
    is($r->{status}, 503, '-LOADING on a lookup: 503');
    is($r->{body}, $unavailable, '-LOADING on a lookup: the JSON error');
    is(metric('tiktok_reports_redis_errors_total') - $errors, 1,
       '-LOADING: counted as a Redis error');
    my @cmds = $fake->commands;
    is_deeply([ map { substr($_ // '', 0, 34) } @cmds[0 .. 3] ],
              [ 'AUTH fake-user fake-pw', 'SELECT 7',
                'SCRIPT LOAD local function rank(s)',
                'HGETALL tiktok:msg:{fake-loading}' ],
              'the handshake: AUTH as the user, SELECT, SCRIPT LOAD, then the lookup')
        or diag explain \@cmds;

    $r = $t->http(path => '/fake/fake-integer');
    is($r->{status}, 503, 'a lookup answered with an integer: 503');
    $r = $t->http(path => '/fake/fake-odd');
    is($r->{status}, 200, 'a lookup answered with an odd number of elements: 200');
    is($r->{body}, '{"messageId":"fake-odd","status":"SEEN","updatedAt":1}',
       '... the pairs shown, the dangling name ignored');
    $r = $t->http(path => '/fake/?id=fake-mixed&id=fake-none');
    is($r->{body}, '{"results":[{"messageId":"fake-mixed","status":"SEEN",'
                   . '"found":true},{"messageId":"fake-none","found":false}]}',
       'a lookup answered with elements that are not strings: those skipped');

    run_cases($t,
        map({
            my ($what, $why) = @$_;
            {
                name => "a call answered with $why", path => '/fake',
                body => json_encode({ results => [ tiktok_seen(id => "fake-$what") ] }),
                expect => { status => 503, body => $unavailable },
            }
        } ([ long => 'too many elements' ], [ strings => 'strings' ],
           [ bulk => 'a string' ], [ error => 'an error' ],
           [ noscript => 'NOSCRIPT twice' ])),
        {
            name => 'a call answered with -1 and 0', path => '/fake',
            body => json_encode({ results => [ map { tiktok_seen(id => "fake-mixed-$_") } 1 .. 4 ] }),
            expect => { status => 200, body => '{"accepted":0,"duplicates":2,"rejected":['
                . '{"index":0,"error":"the message\'s Redis key is not a hash"},'
                . '{"index":2,"error":"the message\'s Redis key is not a hash"}]}' },
        },
        {
            name => 'a call answered by closing the connection', path => '/fake',
            body => json_encode({ results => [ tiktok_seen(id => 'fake-close') ] }),
            expect => { status => 503, body => $unavailable },
        },
    );
    my $log = $t->error_log;
    like($log, qr/tiktok_reports: redis transition failed: ERR something else/,
         'an error reply to a call is logged with the error');
    like($log, qr/tiktok_reports: redis transition failed: $/m,
         'a reply of the wrong shape is logged too');
    like($log, qr/lost the script, reloading/, 'NOSCRIPT: sent again as EVAL');
    is(scalar(grep { /^EVAL local/ } $fake->commands), 1,
       'NOSCRIPT: sent again once, as EVAL, not again after a second NOSCRIPT');
    my $again = sub {
        my $st = 0;
        for (1 .. 50) {
            $st = $t->http(path => '/fake/fake-odd')->{status};
            last if $st == 200;
            sleep 0.1;
        }
        return $st;
    };
    is($again->(), 200, 'after a closed connection the fake is reached again');

    # bytes that are not Redis's protocol: 503, the connection dropped
    $r = $t->http(path => '/fake/fake-garbage');
    is($r->{status}, 503, 'a reply that is not RESP: 503');
    like($t->error_log, qr/redis 127\.0\.0\.1:$fport unavailable: protocol error/,
         'a reply that is not RESP: logged');
    is($again->(), 200, '... and connected again');

    # a reply more than was asked for: the lookup has its answer, the
    # connection, out of step now, is dropped
    $r = $t->http(path => '/fake/fake-extra');
    is($r->{body}, '{"messageId":"fake-extra","status":"SEEN"}',
       'a reply nothing asked for: the lookup before it is answered');
    # logged just after the answer went out
    for (1 .. 100) {
        last if $t->error_log =~ /a reply to no command/;
        sleep 0.01;
    }
    like($t->error_log, qr/redis 127\.0\.0\.1:$fport unavailable: a reply to no command/,
         'a reply nothing asked for: the connection is dropped, logged');
    is($again->(), 200, '... and connected again');
}

$t->stop_nginx;
$t->check_logs;

# --- no free connection in the worker --------------------------------------
#
# worker_connections 5: the listening socket, the channel to the master, the
# Redis connection and two clients.  Two clients that have begun a request
# (so nginx cannot reuse their connections) hold every slot when Redis drops
# the connection; a third takes the slot it freed; the reconnect then finds
# no free connection, and the request of the first client gets 503.  Once
# the clients are gone, Redis is connected again.
{
    my $w = TikTokTest->new(allow_log => qr/worker_connections are not enough/);
    $w->start_redis;
    $w->start_nginx(events => 'worker_connections 5;', server => <<'EOF');
        location = /open {
            tiktok_reports_webhook;
            tiktok_reports_signature off;
        }
EOF
    my $body = json_encode({ results => [ tiktok_seen(id => 'wc-1') ] });
    my $begin = sub {
        my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                      PeerPort => $w->http_port) or die $!;
        print $s "POST /open HTTP/1.1\r\nHost: x\r\n";
        return $s;
    };
    # under valgrind the first handshake may outlast the 1 s timeout
    my $st = 0;
    for (1 .. 50) {
        $st = $w->http(method => 'POST', path => '/open', body => $body,
                       headers => [ 'Content-Type' => 'application/json' ])->{status};
        last if $st == 200;
        sleep 0.2;
    }
    is($st, 200, 'worker_connections 5: connected and serving');
    my @c = map { $begin->() } 1 .. 2;
    sleep 0.2;
    my $lines = () = $w->error_log =~ /\n/g;
    $w->redis('CLIENT', 'KILL', 'SKIPME', 'yes');
    for (1 .. 200) {
        last if $w->error_log =~ /Server closed the connection/;
        sleep 0.005;
    }
    push @c, $begin->();
    for (1 .. 200) {
        last if $w->error_log =~ /worker_connections are not enough/;
        sleep 0.01;
    }
    like($w->error_log, qr/\[alert\] .*\d+ worker_connections are not enough/,
         'no free connection: nginx says so');
    like($w->error_log, qr/tiktok_reports: redis 127\.0\.0\.1:\d+ unavailable: \S/,
         'no free connection: the reconnect fails, logged');
    unlike($w->error_log, qr/unavailable: connect\(\) failed \(115: Operation now in progress\)/,
           'no free connection: the reason is not a stale errno');
    like($w->error_log, qr/unavailable: cannot open a connection/,
         '... but that no connection could be opened');
    my $s = $c[0];
    print $s "Content-Type: application/json\r\nConnection: close\r\n"
           . 'Content-Length: ' . length($body) . "\r\n\r\n$body";
    local $/;
    my $raw = <$s>;
    like($raw // '', qr{^HTTP/1\.1 503 .*\r\n\r\n\{"error":"status store unavailable"\}$}s,
         'no free connection: the request gets 503');
    close $_ for @c;
    for (1 .. 50) {
        $st = $w->http(method => 'POST', path => '/open', body => $body,
                       headers => [ 'Content-Type' => 'application/json' ])->{status};
        last if $st == 200;
        sleep 0.1;
    }
    is($st, 200, 'connections free again: Redis reconnected, 200');
    $w->stop_nginx;
    $w->check_logs;
}

# --- the default address ----------------------------------------------------
#
# Only when this test can own 127.0.0.1:6379: a lock no other run of this
# harness takes, and nothing listening there.  Otherwise a Redis of someone
# else's could be written to, so the check is skipped.
SKIP: {
    skip 'cannot own 127.0.0.1:6379 (in use, or reserved by another test)', 5
        unless TikTokTest::reserve_port(6379);
    my $d = TikTokTest->new;
    $d->{redis_port} = 6379;
    $d->start_redis;
    $d->start_nginx(no_redis => 1, server => <<'EOF');
        location = /open {
            tiktok_reports_webhook;
            tiktok_reports_signature off;
        }
        location = /metrics {
            tiktok_reports_metrics;
        }
EOF
    unlike($d->_file('nginx.conf'), qr/tiktok_reports_redis /,
           'no tiktok_reports_redis in the configuration');
    my $r = $d->http(method => 'POST', path => '/open',
                     headers => [ 'Content-Type' => 'application/json' ],
                     body => json_encode({ results => [ tiktok_seen(id => 'default-1') ] }));
    is($r->{status}, 200, 'the default Redis: 200');
    is($d->redis('HGET', 'tiktok:msg:{default-1}', 'status'), 'SEEN',
       'the default Redis is 127.0.0.1:6379');
    like($d->http(path => '/metrics')->{body},
         qr/^tiktok_reports_redis_connected\{worker="0",redis="127\.0\.0\.1:6379"\} 1$/m,
         'the metrics name it');
    $d->stop_nginx;
    ok(!grep({ /\[(alert|emerg|crit)\]/ } split /\n/, $d->error_log),
       'the default Redis: nothing alarming logged');
    $d->stop_redis;
}

done_testing;
