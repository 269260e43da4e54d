#!/usr/bin/perl
# Each directive's refusals at nginx -t, with the directive named (the cases
# t/config.t does not have), and what some directives do at run time:
# tiktok_reports_redis_max_outstanding (a full connection answers 503 at
# once; with one argument the size is inherited), a secret file's last line
# without a newline, and a helper process (the cache manager) that never
# connects to Redis.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use POSIX ();
use Time::HiRes qw(sleep time);
use TikTokTest;

my $t = TikTokTest->new;
my $dir = $t->dir;

sub write_file {
    my ($name, $text) = @_;
    open my $fh, '>', "$dir/$name" or die "$name: $!";
    print $fh $text;
    close $fh;
}

write_file('big', "x\n" x 40000);
write_file('comments', "# only\n\n   \n#\n");
write_file('last', "first\nlast-line");
mkdir "$dir/adir";

my $w = sub { "location /w { tiktok_reports_webhook; tiktok_reports_signature off; $_[0] }" };
my $h = sub { "location /w { tiktok_reports_webhook; tiktok_reports_signature hmac-sha256; $_[0] }" };
my $s = sub { "location /w { tiktok_reports_webhook; tiktok_reports_signature standard-webhooks; $_[0] }" };

my @cases = (
    [ 'redis twice', $w->('tiktok_reports_redis 127.0.0.1:1; tiktok_reports_redis 127.0.0.1:2;'),
      qr/"tiktok_reports_redis" directive is duplicate/ ],
    [ 'redis with a path', $w->('tiktok_reports_redis 127.0.0.1/0;'),
      qr/invalid host in "127\.0\.0\.1\/0" of "tiktok_reports_redis"/ ],
    [ 'redis with a bad port', $w->('tiktok_reports_redis 127.0.0.1:6379/0;'),
      qr/invalid host in "127\.0\.0\.1:6379\/0" of "tiktok_reports_redis"/ ],
    [ 'redis of a name that does not resolve',
      $w->('tiktok_reports_redis no-such-host.invalid:6379;'),
      qr/host not found in "no-such-host\.invalid:6379" of "tiktok_reports_redis"/ ],
    [ 'redis with an empty unix path', $w->('tiktok_reports_redis unix:;'),
      qr/tiktok_reports_redis/ ],
    [ 'password twice', $w->('tiktok_reports_redis_password a; tiktok_reports_redis_password b;'),
      qr/"tiktok_reports_redis_password" directive is duplicate/ ],
    [ 'empty password', $w->('tiktok_reports_redis_password "";'),
      qr/"tiktok_reports_redis_password" directive must not be empty/ ],
    [ 'empty user', $w->('tiktok_reports_redis_password "" pw;'),
      qr/"tiktok_reports_redis_password" directive must not be empty/ ],
    [ 'user and empty password', $w->('tiktok_reports_redis_password user "";'),
      qr/"tiktok_reports_redis_password" directive must not be empty/ ],
    # nginx's bounds check names the line, not the directive
    [ 'db too large', $w->('tiktok_reports_redis_db 1000001;'),
      qr/value must be between 0 and 1000000 in \S+\/nginx\.conf:\d+/ ],
    [ 'stream_maxlen negative', $w->('tiktok_reports_stream_maxlen -1;'),
      qr/tiktok_reports_stream_maxlen/ ],
    [ 'max_outstanding 0', $w->('tiktok_reports_redis_max_outstanding 0;'),
      qr/invalid number of commands "0"/ ],
    [ 'max_outstanding not a number', $w->('tiktok_reports_redis_max_outstanding many;'),
      qr/invalid number of commands "many"/ ],
    [ 'max_outstanding size 0', $w->('tiktok_reports_redis_max_outstanding 10 0;'),
      qr/invalid size "0"/ ],
    [ 'max_outstanding size not a size', $w->('tiktok_reports_redis_max_outstanding 10 big;'),
      qr/invalid size "big"/ ],
    [ 'max_outstanding twice', $w->('tiktok_reports_redis_max_outstanding 10; '
                                    . 'tiktok_reports_redis_max_outstanding 20;'),
      qr/"tiktok_reports_redis_max_outstanding" directive is duplicate/ ],
    [ 'signature twice', $w->('tiktok_reports_signature off;'),
      qr/"tiktok_reports_signature" directive is duplicate/ ],
    [ 'signature off with a parameter',
      'location /w { tiktok_reports_webhook; tiktok_reports_signature off header=X; }',
      qr/"tiktok_reports_signature" directive takes no parameters with "off"/ ],
    [ 'standard-webhooks with a parameter',
      'location /w { tiktok_reports_webhook; tiktok_reports_signature standard-webhooks x; '
      . "tiktok_reports_secret whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw; }",
      qr/takes no parameters with "standard-webhooks"/ ],
    [ 'hmac- alone',
      'location /w { tiktok_reports_webhook; tiktok_reports_signature hmac-; tiktok_reports_secret k; }',
      qr/invalid "tiktok_reports_signature" "hmac-"/ ],
    [ 'header= without a name', $h->('tiktok_reports_secret k;') =~ s/hmac-sha256;/hmac-sha256 header=;/r,
      qr/invalid parameter "header=" of "tiktok_reports_signature"/ ],
    [ 'an empty secret', $h->('tiktok_reports_secret "";'),
      qr/"tiktok_reports_secret" directive must not be empty/ ],
    [ 'whsec_ alone', $s->('tiktok_reports_secret whsec_;'),
      qr/"tiktok_reports_secret": secret must be "whsec_" followed by base64/ ],
    [ 'whsec_ and not base64', $s->('tiktok_reports_secret whsec_!!!!;'),
      qr/"tiktok_reports_secret": secret must be "whsec_" followed by base64/ ],
    [ 'whsec_ and only padding', $s->('tiktok_reports_secret whsec_==;'),
      qr/"tiktok_reports_secret": secret must be "whsec_" followed by base64/ ],
    [ 'a secret file that does not exist', $h->("tiktok_reports_secret_file $dir/none;"),
      qr/"tiktok_reports_secret_file" cannot open "\Q$dir\E\/none" \(2: No such file/ ],
    [ 'a secret file over 64k', $h->("tiktok_reports_secret_file $dir/big;"),
      qr/"tiktok_reports_secret_file" "\Q$dir\E\/big" is not a readable file of at most 64k/ ],
    [ 'a secret file of comments only', $h->("tiktok_reports_secret_file $dir/comments;"),
      qr/"tiktok_reports_secret_file" "\Q$dir\E\/comments" has no secret/ ],
    [ 'a directory for a secret file', $h->("tiktok_reports_secret_file $dir/adir;"),
      qr/"tiktok_reports_secret_file" cannot read "\Q$dir\E\/adir"/ ],
    [ 'webhook and status in one location',
      'location /w { tiktok_reports_webhook; tiktok_reports_status; tiktok_reports_signature off; }',
      qr/"tiktok_reports_status": the location already has the role "webhook"/ ],
    [ 'metrics with arguments', 'location /m { tiktok_reports_metrics on; }',
      qr/invalid number of arguments in "tiktok_reports_metrics"/ ],
    [ 'a key prefix with a brace', $w->('tiktok_reports_key_prefix "app{1}:";'),
      qr/"tiktok_reports_key_prefix" directive must not contain "\{" or "\}"/ ],
    [ 'cluster with a database', $w->('tiktok_reports_redis 127.0.0.1:1 cluster; tiktok_reports_redis_db 2;'),
      qr/"tiktok_reports_redis_db" 2 is not possible with "cluster"/ ],
    [ 'cluster with a database inherited',
      'tiktok_reports_redis_db 3; ' . $w->('tiktok_reports_redis 127.0.0.1:1 cluster;'),
      qr/"tiktok_reports_redis_db" 3 is not possible with "cluster"/ ],
    [ 'cluster twice', $w->('tiktok_reports_redis 127.0.0.1:1 cluster cluster;'),
      qr/duplicate "cluster" in "tiktok_reports_redis"/ ],
    [ 'cluster and sentinel', $w->('tiktok_reports_redis 127.0.0.1:1 cluster sentinel=m;'),
      qr/"cluster" and "sentinel=" of "tiktok_reports_redis" exclude each other/ ],
    [ 'cluster without a seed', $w->('tiktok_reports_redis cluster;'),
      qr/no address in "tiktok_reports_redis"/ ],
    [ 'cluster of a unix socket', $w->('tiktok_reports_redis unix:/tmp/r.sock cluster;'),
      qr/a cluster is reached over TCP: "unix:\/tmp\/r\.sock" of "tiktok_reports_redis"/ ],
    [ 'two addresses and no cluster', $w->('tiktok_reports_redis 127.0.0.1:1 127.0.0.1:2;'),
      qr/more than one address in "tiktok_reports_redis" needs "sentinel=" or "cluster"/ ],
    [ 'too many results given twice', $w->('tiktok_reports_max_results 5; tiktok_reports_max_results 6;'),
      qr/"tiktok_reports_max_results" directive is duplicate/ ],
);

for my $c (@cases) {
    my ($name, $server, $re) = @$c;
    my ($rc, $out) = $t->nginx_test_conf(server => $server);
    isnt($rc, 0, "$name: refused");
    like($out, $re, "$name: the message names it") or diag $out;
}

# accepted: every algorithm, a secret file whose last line has no newline,
# a whsec_ secret in the URL alphabet without padding
{
    my ($rc, $out) = $t->nginx_test_conf(server => join "\n",
        (map { "location /$_ { tiktok_reports_webhook; "
               . "tiktok_reports_signature hmac-$_ header=X-$_; "
               . "tiktok_reports_secret k; }" } qw(md5 sha1 sha224 sha256 sha384 sha512)),
        "location /file { tiktok_reports_webhook; tiktok_reports_signature hmac-sha256; "
        . "tiktok_reports_secret_file $dir/last; }",
        "location /std { tiktok_reports_webhook; tiktok_reports_signature standard-webhooks; "
        . "tiktok_reports_secret whsec_-_-_; }");
    is($rc, 0, 'every algorithm, a last line without newline, base64url: nginx -t passes')
        or diag $out;
}

# --- at run time --------------------------------------------------------------

$t->start_redis;
$t->start_nginx(http => <<"EOF", server => <<"EOF");
    proxy_cache_path $dir/cache keys_zone=one:1m;
    tiktok_reports_redis_max_outstanding 100 1k;
EOF
        location = /one {
            tiktok_reports_redis_max_outstanding 1;
            tiktok_reports_redis_timeout 5s;
            tiktok_reports_webhook;
            tiktok_reports_signature off;
        }
        location = /bytes {
            tiktok_reports_redis_max_outstanding 100;
            tiktok_reports_redis_timeout 5s;
            tiktok_reports_webhook;
            tiktok_reports_signature off;
        }
        location = /file {
            tiktok_reports_webhook;
            tiktok_reports_signature hmac-sha256;
            tiktok_reports_secret_file $dir/last;
        }
        location = /metrics {
            tiktok_reports_metrics;
        }
EOF

sub post {
    my ($path, @ids) = @_;
    return $t->http(method => 'POST', path => $path, timeout => 10,
                    headers => [ 'Content-Type' => 'application/json' ],
                    body => json_encode({ results => [ map { tiktok_seen(id => $_) } @ids ] }));
}

sub busy {
    my $m = $t->http(path => '/metrics');
    return $m->{body} =~ /^tiktok_reports_redis_busy_total (\d+)$/m ? $1 : undef;
}

# the cache manager runs the module's init_process too: it must not connect
{
    my $st = 0;
    for (1 .. 50) {
        $st = post('/one', 'warm-1')->{status};
        last if $st == 200;
        sleep 0.2;
    }
    is($st, 200, 'connected');
    # the worker, the cache manager and the cache loader (not named so
    # under valgrind)
    my @kids = $t->worker_pids;
    is(scalar @kids, 3, 'the worker and two cache helper processes run');
    # the test's own connection, and the worker's: one per Redis it names
    my @clients = grep { /^id=/ } split /\n/, $t->redis('CLIENT', 'LIST');
    is(scalar @clients, 2, 'only the worker connected to Redis, not the cache manager')
        or diag join "\n", @clients;
}

# a connection at its limit: 503 at once, counted, logged once
for my $case ([ '/one', 'one command' ], [ '/bytes', 'the inherited 1k' ]) {
    my ($path, $what) = @$case;
    my $busy = busy();
    $t->freeze_redis;
    my $pid = fork();
    die "fork: $!" unless defined $pid;
    if ($pid == 0) {
        my $r = eval { post($path, "$path-first") };
        POSIX::_exit($r && $r->{status} == 200 ? 0 : 1);
    }
    sleep 0.3;
    my $t0 = time;
    # over the limit: a second command, or (for /bytes) 5 reports of 300 bytes
    my @ids = $path eq '/one' ? ("$path-second")
                              : (map { "$path-second-$_-" . ('x' x 250) } 1 .. 5);
    my $r = post($path, @ids);
    my $took = time - $t0;
    is($r->{status}, 503, "$what outstanding: the next request gets 503");
    is($r->{body}, '{"error":"status store unavailable"}', "$what: the JSON error");
    ok($took < ($ENV{TT_VALGRIND} ? 2 : 0.5), sprintf("$what: at once (%.2fs)", $took));
    $t->thaw_redis;
    waitpid $pid, 0;
    is($? >> 8, 0, "$what: the request that was first is answered 200");
    is(busy() - $busy, 1, "$what: counted in tiktok_reports_redis_busy_total");
    is($t->redis('EXISTS', "tiktok:msg:{$ids[0]}"), 0, "$what: nothing of it stored");
}
like($t->error_log, qr/\[warn\] .*tiktok_reports: redis 127\.0\.0\.1:\d+ has 1 commands \(\d+ bytes\) outstanding, requests get 503 until it catches up/,
     'a full connection is logged');

# a small request still fits beside one that waits, within both limits
{
    $t->freeze_redis;
    my $pid = fork();
    die "fork: $!" unless defined $pid;
    if ($pid == 0) {
        my $r = eval { post('/bytes', 'fits-1') };
        POSIX::_exit($r && $r->{status} == 200 ? 0 : 1);
    }
    sleep 0.3;
    my $pid2 = fork();
    if ($pid2 == 0) {
        my $r = eval { post('/bytes', 'fits-2') };
        POSIX::_exit($r && $r->{status} == 200 ? 0 : 1);
    }
    sleep 0.3;
    $t->thaw_redis;
    waitpid $pid, 0;
    my $first = $? >> 8;
    waitpid $pid2, 0;
    is("$first " . ($? >> 8), '0 0', 'two small requests within the limits: both 200');
}

# the secret file's last line, without a newline
{
    my $body = json_encode({ results => [ tiktok_seen(id => 'last-1') ] });
    my $r = $t->http(method => 'POST', path => '/file', body => $body,
        headers => [ 'Content-Type' => 'application/json',
                     'X-Signature' => hmac_hex('sha256', 'last-line', $body) ]);
    is($r->{status}, 200, 'the last line of a secret file without a newline is a secret');
}

$t->stop_nginx;
$t->check_logs;

done_testing;
