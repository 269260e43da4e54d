#!/usr/bin/perl
# What an nginx operator expects: configuration errors at the line of the
# directive at fault, client-caused refusals at a configurable log level,
# each request's outcome in the access log, and metrics a dashboard needs
# (request durations, build info, reconnects, canonical bucket labels, no
# silent caps) that promtool accepts.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::HiRes qw(sleep time);
use TikTokTest;

# --- configuration errors, at the directive's file:line --------------------

# the line of the conf that carries "# <mark>"
sub line_of {
    my ($t, $mark) = @_;
    open my $fh, '<', $t->dir . '/nginx.conf' or die $!;
    my $n = 0;
    while (<$fh>) {
        $n++;
        return $n if /# \Q$mark\E$/;
    }
    die "no line marked $mark";
}

{
    my $t = TikTokTest->new;
    my $secrets = join '', map { "            tiktok_reports_secret s$_;"
                                 . ($_ == 17 ? " # too-many" : '') . "\n" }
                           1 .. 17;

    open my $sf, '>', $t->dir . '/secrets' or die $!;
    print $sf "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\nnot-a-whsec-secret\n";
    close $sf;

    my @cases = (
        [ 'a webhook without signature or secret', '', <<'EOF',
        location = /hooks/a {
            tiktok_reports_webhook; # here
        }
EOF
          qr{"tiktok_reports_webhook" needs "tiktok_reports_signature" with at least one "tiktok_reports_secret", or "tiktok_reports_signature off" for location "/hooks/a"} ],

        [ 'a signature without secret', <<'EOF', <<'EOF',
    tiktok_reports_signature hmac-sha256;
EOF
        location /x {
            location /x/hook {
                tiktok_reports_webhook; # here
            }
        }
EOF
          qr{"tiktok_reports_webhook" needs .* for location "/x/hook"} ],

        [ 'an unknown digest', '', <<'EOF',
        location = /w {
            tiktok_reports_webhook;
            tiktok_reports_signature hmac-sha3; # here
            tiktok_reports_secret x;
        }
EOF
          qr{"tiktok_reports_signature": unknown digest "sha3"} ],

        [ 'an unknown digest nobody uses yet', <<'EOF', '',
    tiktok_reports_signature hmac-whirlpool; # here
EOF
          qr{"tiktok_reports_signature": unknown digest "whirlpool"} ],

        [ 'an empty secret', '', <<'EOF',
        location = /w {
            tiktok_reports_webhook;
            tiktok_reports_signature hmac-sha256;
            tiktok_reports_secret ""; # here
        }
EOF
          qr{"tiktok_reports_secret" directive must not be empty} ],

        [ 'a secret inherited into a location it does not fit', <<'EOF', <<'EOF',
    tiktok_reports_secret plain-secret; # here
EOF
        location = /hmac {
            tiktok_reports_webhook;
            tiktok_reports_signature hmac-sha256;
        }
        location = /std {
            tiktok_reports_webhook;
            tiktok_reports_signature standard-webhooks;
        }
EOF
          qr{"tiktok_reports_secret": secret must be "whsec_" followed by base64 for location "/std"} ],

        [ 'a bad secret in a secret file', '', <<'EOF',
        location = /std {
            tiktok_reports_webhook;
            tiktok_reports_signature standard-webhooks;
            tiktok_reports_secret_file %%DIR%%/secrets; # here
        }
EOF
          qr{"tiktok_reports_secret": secret must be "whsec_" followed by base64 for location "/std"} ],

        [ 'too many secrets', '', <<"EOF",
        location = /w {
            tiktok_reports_webhook;
            tiktok_reports_signature hmac-sha256;
$secrets        }
EOF
          qr{"tiktok_reports_secret": too many secrets \(at most 16\)},
          'too-many' ],

        [ 'a zero timeout', <<'EOF', '',
    tiktok_reports_redis_timeout 0; # here
EOF
          qr{"tiktok_reports_redis_timeout" must be greater than 0} ],

        [ 'a webhook that is also a lookup', '', <<'EOF',
        location = /w {
            tiktok_reports_webhook;
            tiktok_reports_signature off;
            tiktok_reports_status; # here
        }
EOF
          qr{"tiktok_reports_status": the location already has the role "webhook"} ],

        [ 'metrics and health in one location', '', <<'EOF',
        location = /m {
            tiktok_reports_metrics;
            tiktok_reports_health; # here
        }
EOF
          qr{"tiktok_reports_health": the location already has the role "metrics"} ],

        [ 'a log level nginx does not offer here', '', <<'EOF',
        location = /w {
            tiktok_reports_log_level debug; # here
        }
EOF
          qr{invalid value "debug"} ],
    );

    for my $c (@cases) {
        my ($name, $http, $server, $re, $mark) = @$c;
        my ($rc, $out) = $t->nginx_test_conf(http => $http, server => $server);
        isnt($rc, 0, "$name: refused");
        like($out, $re, "$name: says what") or diag $out;
        my $where = $t->dir . '/nginx.conf:' . line_of($t, $mark || 'here');
        like($out, qr{$re.* in \Q$where\E$}m, "$name: at $where")
            or diag $out;
        like($out, qr{\[emerg\]}, "$name: at emerg");
    }

    # the inherited secret that fits an hmac location is not an error there
    my ($rc, $out) = $t->nginx_test_conf(http => <<'EOF', server => <<'EOF');
    tiktok_reports_secret plain-secret;
    tiktok_reports_log_level notice;
EOF
        location = /hmac {
            tiktok_reports_webhook;
            tiktok_reports_signature hmac-sha256;
            tiktok_reports_log_level error;
        }
        location = /health { tiktok_reports_health; }
EOF
    is($rc, 0, 'a good configuration with the new directives passes')
        or diag $out;
}

# --- log level and access log variables -------------------------------------

# short, for the frozen Redis below; a slow worker (valgrind) needs longer
# for its handshake, or the watchdog would reconnect
my $timeout = $ENV{TT_VALGRIND} ? 2 : 0.3;

my $t = TikTokTest->new;
$t->start_redis;
$t->start_nginx(http => <<"EOF", server => <<'EOF');
    log_format tiktok '\$request_uri \$status a=\$tiktok_reports_accepted '
                      'd=\$tiktok_reports_duplicates '
                      'r=\$tiktok_reports_rejected '
                      't=\$tiktok_reports_redis_time';
    tiktok_reports_redis_timeout ${\ int($timeout * 1000)}ms;
EOF
        access_log %%DIR%%/access.log tiktok;

        location = /webhook {
            tiktok_reports_webhook;
            tiktok_reports_signature hmac-sha256;
            tiktok_reports_secret k;
        }
        location = /warn {
            tiktok_reports_webhook;
            tiktok_reports_signature hmac-sha256;
            tiktok_reports_secret k;
            tiktok_reports_log_level warn;
            tiktok_reports_max_results 2;
        }
        location = /error {
            tiktok_reports_webhook;
            tiktok_reports_signature hmac-sha256;
            tiktok_reports_secret k;
            tiktok_reports_log_level error;
        }
        location /tiktok/status/ {
            tiktok_reports_status;
        }
        location = /metrics {
            tiktok_reports_metrics;
        }
EOF

sub post {
    my ($path, $body, %o) = @_;
    return $t->http(method => 'POST', path => $path,
        headers => [ 'Content-Type' => 'application/json',
                     'X-Signature' => $o{sig} // hmac_hex('sha256', 'k', $body) ],
        body => $body);
}

# the error.log lines a request adds
sub logged {
    my ($code) = @_;
    my $before = length $t->error_log;
    my $res = $code->();
    sleep 0.05;
    return ($res, [ split /\n/, substr($t->error_log, $before) ]);
}

sub level_of {
    my ($lines, $re) = @_;
    my @l = grep { /$re/ } @$lines;
    return 'none' unless @l;
    return scalar(@l) . ' lines' if @l > 1;
    return $l[0] =~ /\[(\w+)\]/ ? $1 : '?';
}

my $bad = json_encode({ results => [ { to => 'no id' } ] });
my $two = json_encode({ results => [ tiktok_dlr(id => 'lv-1'), { to => 'x' } ] });
my $three = json_encode({ results => [ 0, 0, 0 ] });

{
    my ($res, $lines) = logged(sub { post('/webhook', $two, sig => 'bad') });
    is($res->{status}, 401, 'bad signature: 401');
    is(level_of($lines, qr/webhook refused: invalid signature/), 'info',
       'bad signature: at info by default');

    ($res, $lines) = logged(sub { post('/webhook', 'not json') });
    is($res->{status}, 400, 'bad body: 400');
    is(level_of($lines, qr/webhook body refused: invalid JSON/), 'info',
       'bad body: at info by default');

    ($res, $lines) = logged(sub { post('/webhook', $bad) });
    is($res->{status}, 200, 'rejected result: 200');
    is(level_of($lines, qr/1 of 1 results rejected/), 'info',
       'rejected results: at info by default');

    ($res, $lines) = logged(sub { post('/warn', $two, sig => 'bad') });
    is(level_of($lines, qr/webhook refused: invalid signature/), 'warn',
       'bad signature: at warn where configured');

    ($res, $lines) = logged(sub { post('/warn', $three) });
    is($res->{status}, 413, 'too many results: 413');
    is(level_of($lines, qr/webhook body refused: more than 2 results/), 'warn',
       'too many results: at warn where configured');

    ($res, $lines) = logged(sub { post('/warn', $bad) });
    is(level_of($lines, qr/1 of 1 results rejected/), 'warn',
       'rejected results: at warn where configured');

    ($res, $lines) = logged(sub { post('/error', 'not json') });
    is(level_of($lines, qr/webhook body refused/), 'error',
       'bad body: at error where configured');
}

# what the access log says of each request
{
    my $r1 = post('/webhook', $two);
    is($r1->{body}, '{"accepted":1,"duplicates":0,"rejected":[{"index":1,"error":"missing messageId"}]}',
       'a body with one stored and one rejected result');
    my $r2 = post('/webhook', $two);
    is($r2->{body}, '{"accepted":0,"duplicates":1,"rejected":[{"index":1,"error":"missing messageId"}]}',
       'the same again: a duplicate');
    my $many = json_encode({ results => [ map { tiktok_dlr(id => "al-$_") } 1 .. 5 ],
                           });
    post('/webhook', $many);
    post('/webhook', $many);
    post('/webhook', 'not json');
    post('/webhook', $two, sig => 'bad');
    $t->http(path => '/tiktok/status/lv-1');

    my ($m) = metrics();
    is($m->{'tiktok_reports_redis_reconnects_total'}, 0, 'no reconnect yet');

    # Redis frozen: the commands went out, the answer came at the timeout
    $t->freeze_redis;
    my $r3 = post('/webhook', json_encode({ results => [ tiktok_dlr(id => 'frozen') ] }));
    $t->thaw_redis;
    is($r3->{status}, 503, 'Redis frozen: 503');

    sleep 0.1;
    open my $fh, '<', $t->dir . '/access.log' or die $!;
    my @log = grep { m{^/(webhook|tiktok)} } <$fh>;
    chomp @log;

    like($log[-8] // '', qr{^/webhook 200 a=1 d=0 r=1 t=\d+\.\d{3}$},
         'access log: accepted, duplicates, rejected and the Redis time');
    like($log[-7] // '', qr{^/webhook 200 a=0 d=1 r=1 t=\d+\.\d{3}$},
         'access log: a duplicate');
    like($log[-6] // '', qr{^/webhook 200 a=5 d=0 r=0 t=}, 'access log: five stored');
    like($log[-5] // '', qr{^/webhook 200 a=0 d=5 r=0 t=}, 'access log: five duplicates');
    is($log[-4] // '', '/webhook 400 a=- d=- r=- t=-',
       'access log: a refused body got no counts and no Redis time');
    is($log[-3] // '', '/webhook 401 a=- d=- r=- t=-',
       'access log: a bad signature neither');
    like($log[-2] // '', qr{^/tiktok/status/lv-1 200 a=- d=- r=- t=\d+\.\d{3}$},
         'access log: a lookup has no webhook counts, but its Redis time');
    my ($waited) = ($log[-1] // '') =~ m{^/webhook 503 a=- d=- r=- t=(\d+\.\d{3})$};
    ok(defined $waited && $waited >= $timeout - 0.05 && $waited < $timeout + 5,
       'access log: a 503 at the timeout says how long Redis was waited for')
        or diag $log[-1];
}

# --- metrics ------------------------------------------------------------------

sub metrics {
    my $r = $t->http(path => '/metrics');
    my %m;
    for (split /\n/, $r->{body}) {
        next if /^#/;
        my ($k, $v) = /^(\S+) (\S+)$/ or next;
        $m{$k} = $v;
    }
    return (\%m, $r->{body});
}

# promtool, when there is one; CI (root) installs it and must not skip
sub promtool_ok {
    my ($t, $text, $name) = @_;
    my $promtool = `sh -c 'command -v promtool'`;
    chomp $promtool;
    SKIP: {
        skip 'promtool not installed (Debian package prometheus)', 1
            if !$promtool && $> != 0;
        my $f = $t->dir . '/metrics.txt';
        open my $fh, '>', $f or die $!;
        print $fh $text;
        close $fh;
        my $out = `promtool check metrics < $f 2>&1`;
        ok($promtool && $? == 0 && $out eq '', "$name: promtool check metrics")
            or diag($promtool ? $out : 'promtool missing');
    }
}

{
    my ($m, $text) = metrics();

    # every webhook and lookup request is in the histogram
    my $webhook = 0;
    $webhook += $m->{$_} for grep { /^tiktok_reports_requests_total\{location="webhook"/ } keys %$m;
    is($webhook, 14, 'every webhook request counted');
    is($m->{'tiktok_reports_request_duration_seconds_count{location="webhook"}'}, $webhook,
       'duration histogram: one observation per webhook request');
    is($m->{'tiktok_reports_request_duration_seconds_bucket{location="webhook",le="+Inf"}'},
       $webhook, 'duration histogram: +Inf holds them all');
    is($m->{'tiktok_reports_request_duration_seconds_count{location="status"}'}, 1,
       'duration histogram: the lookup');
    ok($m->{'tiktok_reports_request_duration_seconds_sum{location="webhook"}'}
       >= $timeout - 0.05,
       'duration histogram: the sum includes the 503 at the timeout');
    ok($m->{'tiktok_reports_request_duration_seconds_bucket{location="webhook",le="0.25"}'}
       < $webhook, 'duration histogram: the slow one is above 0.25 s');

    # canonical bounds: as Prometheus writes them
    like($text, qr/^tiktok_reports_redis_rtt_seconds_bucket\{le="0\.0001"\} \d+$/m,
         'le="0.0001", not 0.000100');
    like($text, qr/^tiktok_reports_redis_rtt_seconds_bucket\{le="1"\} \d+$/m, 'le="1"');
    like($text, qr/^tiktok_reports_request_duration_seconds_bucket\{location="webhook",le="0\.005"\} \d+$/m,
         'le="0.005"');
    unlike($text, qr/le="[^"]*\.\d*0"/, 'no bound with a trailing zero');

    my ($info) = grep { /^tiktok_reports_build_info\{/ } keys %$m;
    like($info // '', qr/^tiktok_reports_build_info\{version="\d+\.\d+\.\d+",nginx_version="\d+\.\d+\.\d+",hiredis_version="\d+\.\d+\.\d+"\}$/,
         'build info: module, nginx and hiredis versions');
    my ($pkg) = `head -1 $FindBin::Bin/../debian/changelog` =~ /\((\d+\.\d+\.\d+)/;
    like($info // '', qr/\{version="\Q$pkg\E"/,
         "build info: the version debian/changelog packages ($pkg)");
    my $nginx = `nginx -v 2>&1`;
    my ($nv) = $nginx =~ m{nginx/(\d+\.\d+\.\d+)};
    like($info // '', qr/nginx_version="\Q$nv\E"/, "build info: nginx $nv");
    is($m->{$info // ''}, 1, 'build info: 1');

    is($m->{'tiktok_reports_metrics_overflow_total'}, 0, 'no overflow');
    promtool_ok($t, $text, 'one worker');
}

# a reconnect is counted
{
    $t->stop_redis;
    post('/webhook', $two);
    sleep 0.5;
    $t->start_redis;
    my $ok;
    for (1 .. 100) {
        my $r = post('/webhook', $two);
        $ok = 1, last if $r && $r->{status} == 200;
        sleep 0.1;
    }
    ok($ok, 'stored again once Redis is back');
    my ($m) = metrics();
    ok($m->{'tiktok_reports_redis_reconnects_total'} >= 1,
       "reconnects counted: $m->{'tiktok_reports_redis_reconnects_total'}");
}

$t->stop_nginx;
$t->check_logs;

# --- a cap of the shared zone is not silent -----------------------------------

# nine Redis connections (one per database) where the gauge holds eight
{
    my $o = TikTokTest->new;
    $o->start_redis;
    my $locs = join '', map { <<"EOF" } 0 .. 8;
        location = /w$_ {
            tiktok_reports_webhook;
            tiktok_reports_signature off;
            tiktok_reports_redis_db $_;
        }
EOF
    $o->start_nginx(server => $locs . <<'EOF');
        location = /metrics { tiktok_reports_metrics; }
EOF
    my ($m, $text);
    for (1 .. 100) {
        my $r = $o->http(path => '/metrics');
        $text = $r->{body};
        last if $text =~ /^tiktok_reports_metrics_overflow_total [1-9]/m;
        sleep 0.05;
    }
    like($text, qr/^tiktok_reports_metrics_overflow_total [1-9]\d*$/m,
         'the ninth connection is counted as overflow');
    is(scalar(() = $text =~ /^tiktok_reports_redis_connected\{/mg), 8,
       'the gauge shows the eight it holds');
    my $r = $o->http(method => 'POST', path => '/w8',
                     headers => [ 'Content-Type' => 'application/json' ],
                     body => json_encode({ results => [ tiktok_dlr(id => 'db8') ] }));
    is($r->{status}, 200, 'the ninth Redis still serves');
    my @w = grep { /tiktok_reports_redis_connected shows 64 workers and 8 Redis/ }
            split /\n/, $o->error_log;
    is(scalar @w, 1, 'logged once') or diag explain \@w;
    like($w[0] // '', qr/\[warn\]/, 'at warn');
    promtool_ok($o, $text, 'with an overflow');
    $o->stop_nginx;
    $o->check_logs;
}

done_testing;
