#!/usr/bin/perl
# $tiktok_reports_redis_time on a lookup location: how long the lookup's
# HGETALLs took, from the first sent to the answer (or the timeout), as
# for the webhook; "-" for a lookup that sent nothing to Redis.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::HiRes qw(sleep);
use TikTokTest;

# short, for the frozen Redis below; a slow worker (valgrind) needs longer
# for its handshake, or the watchdog would reconnect
my $timeout = $ENV{TT_VALGRIND} ? 2 : 0.3;

my $t = TikTokTest->new;
$t->start_redis;
$t->start_nginx(http => <<"EOF", server => <<'EOF');
    log_format lookup '\$request_method \$request_uri \$status '
                      'a=\$tiktok_reports_accepted t=\$tiktok_reports_redis_time';
    tiktok_reports_redis_timeout ${\ int($timeout * 1000)}ms;
EOF
        location = /webhook {
            tiktok_reports_webhook;
            tiktok_reports_signature off;
        }
        location /status/ {
            tiktok_reports_status;
            access_log %%DIR%%/lookup.log lookup;
        }
        location = /metrics {
            tiktok_reports_metrics;
        }
EOF

# the access log line of one request
sub logged {
    my ($req) = @_;
    my $f = $t->dir . '/lookup.log';
    my $before = -s $f // 0;
    my $res = $t->http(%$req);
    my $line = '';
    for (1 .. 50) {
        if (open my $fh, '<', $f) {
            local $/;
            $line = substr(<$fh> // '', $before);
        }
        last if $line =~ /\n/;
        sleep 0.02;
    }
    chomp $line;
    return ($res, $line);
}

my $res = $t->http(method => 'POST', path => '/webhook',
    headers => [ 'Content-Type' => 'application/json' ],
    body => json_encode({ results => [ tiktok_dlr(id => 'll-1') ] }));
is($res && $res->{status}, 200, 'a report is stored');

my $num = qr/\d+\.\d{3}/;

# lookups that reached Redis: a number, the webhook's counts none
{
    my ($r, $line) = logged({ path => '/status/ll-1' });
    is($r->{status}, 200, 'a lookup of a stored id: 200');
    like($line, qr{^GET /status/ll-1 200 a=- t=$num$},
         'a lookup: the Redis time, no webhook counts');

    ($r, $line) = logged({ path => '/status/nobody' });
    is($r->{status}, 404, 'an unknown id: 404');
    like($line, qr{^GET /status/nobody 404 a=- t=$num$},
         'an unknown id was asked of Redis too');

    ($r, $line) = logged({ path => '/status/?id=ll-1&id=nobody' });
    is($r->{status}, 200, 'a batch by arguments: 200');
    like($line, qr{^GET /status/\?id=ll-1&id=nobody 200 a=- t=$num$},
         'a batch by arguments: the Redis time');

    ($r, $line) = logged({ method => 'POST', path => '/status/',
                           headers => [ 'Content-Type' => 'application/json' ],
                           body => '{"ids":["ll-1","a","b"]}' });
    is($r->{status}, 200, 'a POSTed batch: 200');
    like($line, qr{^POST /status/ 200 a=- t=$num$},
         'a POSTed batch: the Redis time');
    my ($s) = $line =~ /t=(\S+)$/;
    ok(defined $s && $s < 1, 'a lookup on an idle Redis takes well under a second')
        or diag $line;
}

# lookups refused before Redis: "-"
{
    my ($r, $line) = logged({ method => 'PUT', path => '/status/ll-1', body => 'x' });
    is($r->{status}, 405, 'PUT: 405');
    is($line, 'PUT /status/ll-1 405 a=- t=-', 'a 405 never reached Redis: -');

    ($r, $line) = logged({ path => '/status/' });
    is($r->{status}, 400, 'no messageId: 400');
    is($line, 'GET /status/ 400 a=- t=-', 'a 400 never reached Redis: -');

    ($r, $line) = logged({ method => 'POST', path => '/status/',
                           headers => [ 'Content-Type' => 'application/json' ],
                           body => '{"ids":' });
    is($r->{status}, 400, 'a broken POSTed batch: 400');
    is($line, 'POST /status/ 400 a=- t=-', 'a broken body never reached Redis: -');
}

# Redis frozen: the commands went out, the answer came at the timeout
{
    $t->freeze_redis;
    my ($r, $line) = logged({ path => '/status/ll-1' });
    $t->thaw_redis;
    is($r->{status}, 503, 'Redis frozen: 503');
    my ($waited) = $line =~ m{^GET /status/ll-1 503 a=- t=($num)$};
    ok(defined $waited && $waited >= $timeout - 0.05 && $waited < $timeout + 5,
       'a 503 at the timeout says how long Redis was waited for')
        or diag $line;
}

# Redis gone: refused at once, nothing sent
{
    # once the worker has reconnected after the freeze, then lost Redis
    for (1 .. 100) {
        last if $t->http(path => '/metrics')->{body}
                =~ /^tiktok_reports_redis_connected\{[^}]*\} 1$/m;
        sleep 0.05;
    }
    $t->stop_redis;
    for (1 .. 100) {
        last if $t->http(path => '/metrics')->{body}
                =~ /^tiktok_reports_redis_connected\{[^}]*\} 0$/m;
        sleep 0.05;
    }
    my ($r, $line) = logged({ path => '/status/ll-1' });
    is($r->{status}, 503, 'Redis stopped: 503');
    is($line, 'GET /status/ll-1 503 a=- t=-',
       'a lookup with Redis known to be down sent nothing: -');
}

$t->stop_nginx;
$t->check_logs;

done_testing;
