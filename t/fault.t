#!/usr/bin/perl
# What the module does when a call that can fail does fail: an allocation,
# OpenSSL, hiredis, yajl, reading the body's temp file.  Needs the fault
# injection build (FAULT=1 .ci/build, or the coverage build), where
# t/fault/ngx_tiktok_reports_fault.h makes the n-th call of a function from
# a given function of the module fail, as the file "fault" in nginx's prefix
# says.  Each case checks that its fault fired, the answer, what Redis holds,
# and that the next request is served.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use IO::Socket::INET;
use Time::HiRes qw(sleep);
use TikTokTest;
use MIME::Base64 ();

my $root = "$FindBin::Bin/..";
my $so = $ENV{TT_MODULE}
    || ($ENV{TT_COVERAGE} ? "$root/build/coverage/objs/ngx_tiktok_reports_module.so"
        : $ENV{TT_SANITIZE} ? "$root/build/asan-fault/objs/ngx_tiktok_reports_module.so"
        : "$root/build/fault/objs/ngx_tiktok_reports_module.so");
plan skip_all => "no fault injection build at $so (FAULT=1 .ci/build"
                 . ($ENV{TT_SANITIZE} ? ' with SANITIZE=1' : '') . ')'
    unless -f $so && `nm -D $so` =~ /\bngx_tiktok_reports_fault\b/;
$ENV{TT_MODULE} = $so;

# a worker that cannot start (the last case) is an alert; the faults of
# \"nginx -t\" are its emergencies
my $t = TikTokTest->new;
my $dir = $t->dir;

sub fault {
    my ($d, @rules) = @_;
    open my $fh, '>', "$d/fault.tmp" or die $!;
    print $fh map { "$_\n" } @rules;
    close $fh;
    rename "$d/fault.tmp", "$d/fault" or die $!;
}

sub no_fault { unlink "$_[0]/fault" }

$t->start_redis;
$t->start_nginx(http => "    tiktok_reports_redis_timeout 5s;\n", server => <<'EOF');
        location = /open {
            tiktok_reports_webhook;
            tiktok_reports_signature off;
        }
        location = /one {
            tiktok_reports_webhook;
            tiktok_reports_signature off;
            tiktok_reports_max_results 1;
        }
        location = /sig {
            client_body_buffer_size 1k;
            tiktok_reports_webhook;
            tiktok_reports_signature hmac-sha256;
            tiktok_reports_secret k;
        }
        location = /std {
            tiktok_reports_webhook;
            tiktok_reports_signature standard-webhooks;
            tiktok_reports_secret whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw;
        }
        location /st/ {
            tiktok_reports_status;
        }
        location /st3/ {
            tiktok_reports_redis_db 3;
            tiktok_reports_status;
        }
        location = /db5 {
            tiktok_reports_redis_db 5;
            tiktok_reports_redis_timeout 500ms;
            tiktok_reports_webhook;
            tiktok_reports_signature off;
        }
        location = /metrics {
            tiktok_reports_metrics;
        }
        location = /health {
            tiktok_reports_health;
        }
EOF

my $n = 0;

# a request; returns the response (or undef)
sub post {
    my ($path, @results) = @_;
    my $body = json_encode({ results => \@results });
    return $t->http(method => 'POST', path => $path, body => $body,
        headers => [ 'Content-Type' => 'application/json',
                     'X-Signature' => hmac_hex('sha256', 'k', $body) ]);
}

sub seen { tiktok_seen(id => $_[0]) }

sub fired {
    my ($callee, $caller) = @_;
    my $c = () = $t->error_log =~ /tiktok_reports fault: \Q$callee\E in \Q$caller\E$/mg;
    return $c;
}

# one case: the rules, a request, what it must get; then the fault is gone
# and a request of the same kind must be served
sub case {
    my (%c) = @_;
    my @fired = map { [ (split ' ')[0, 1] ] } @{ $c{rules} };
    my @before = map { fired(@$_) } @fired;
    fault($dir, @{ $c{rules} });
    my $r = $c{request}->();
    no_fault($dir);
    for my $i (0 .. $#fired) {
        is(fired(@{ $fired[$i] }) - $before[$i], 1,
           "$c{name}: $fired[$i][0] failed in $fired[$i][1]");
    }
    is($r && $r->{status}, $c{status}, "$c{name}: $c{status}")
        or diag($r && $r->{raw});
    is($r && $r->{body}, $c{body}, "$c{name}: body") if defined $c{body};
    $c{check}->($r) if $c{check};
    if ($c{after}) {
        my $a = $c{after}->();
        is($a && $a->{status}, $c{after_status} // 200, "$c{name}: then served again");
    }
}

my $unavailable = '{"error":"status store unavailable"}';

# --- the webhook --------------------------------------------------------------

for my $f (
    [ 'ngx_pcalloc ngx_tiktok_reports_webhook_store 1', 'the answer\'s counts' ],
    [ 'ngx_pool_cleanup_add ngx_tiktok_reports_wait_create 1', 'the wait\'s cleanup' ],
    [ 'ngx_calloc ngx_tiktok_reports_wait_create 1', 'the wait' ],
    [ 'ngx_palloc ngx_tiktok_reports_webhook_alloc 1', 'the parser' ],
    [ 'yajl_alloc ngx_tiktok_reports_parser_create 1', 'yajl' ],
) {
    my ($rule, $what) = @$f;
    my $id = 'wh-' . ++$n;
    case(name => "webhook, no memory for $what", rules => [ $rule ],
         request => sub { post('/open', seen($id)) }, status => 500,
         check => sub { is($t->redis('EXISTS', "tiktok:msg:{$id}"), 0,
                           "webhook, no memory for $what: nothing stored") },
         after => sub { post('/open', seen($id)) });
}

case(name => 'webhook, no memory for the answer after Redis confirmed',
     rules => [ 'ngx_pnalloc ngx_tiktok_reports_webhook_answer 1' ],
     request => sub { post('/open', seen('wh-answer')) }, status => 500,
     check => sub { is($t->redis('HGET', 'tiktok:msg:{wh-answer}', 'status'), 'SEEN',
                       '... stored all the same, so the retry is a duplicate') },
     after => sub {
         my $r = post('/open', seen('wh-answer'));
         is($r->{body}, '{"accepted":0,"duplicates":1,"rejected":[]}',
            '... and the retry is answered as one');
         $r;
     });

case(name => 'webhook, no memory for the 413',
     rules => [ 'ngx_pnalloc ngx_tiktok_reports_webhook_too_many 1' ],
     request => sub { post('/one', seen('tm-1'), seen('tm-2')) }, status => 500,
     after => sub { post('/one', seen('tm-1'), seen('tm-2')) }, after_status => 413);

case(name => 'webhook, no memory for an error answer',
     rules => [ 'ngx_pnalloc ngx_tiktok_reports_send_error 1' ],
     request => sub { $t->http(method => 'POST', path => '/sig', body => '{}',
                               headers => [ 'Content-Type' => 'application/json' ]) },
     status => 500,
     after => sub { $t->http(method => 'POST', path => '/sig', body => '{}',
                             headers => [ 'Content-Type' => 'application/json' ]) },
     after_status => 401);

case(name => 'webhook, no memory for Allow',
     rules => [ 'ngx_list_push ngx_tiktok_reports_send_not_allowed 1' ],
     request => sub { $t->http(path => '/open') }, status => 500,
     after => sub { $t->http(path => '/open') }, after_status => 405);

case(name => 'webhook, no memory for Retry-After',
     rules => [ 'ngx_alloc ngx_tiktok_reports_store_call 1',
                'ngx_list_push ngx_tiktok_reports_send_error 1' ],
     request => sub { post('/open', seen('ra-1')) }, status => 500,
     after => sub { post('/open', seen('ra-1')) });

# the answer's buffer cannot be had: the connection is closed
{
    my $before = fired('ngx_pcalloc', 'ngx_tiktok_reports_send');
    fault($dir, 'ngx_pcalloc ngx_tiktok_reports_send 1');
    my $body = json_encode({ results => [ seen('cut-1') ] });
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $t->http_port)
        or die $!;
    print $s "POST /open HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
           . 'Content-Length: ' . length($body) . "\r\nConnection: close\r\n\r\n$body";
    local $/;
    my $raw = <$s> // '';
    no_fault($dir);
    is(fired('ngx_pcalloc', 'ngx_tiktok_reports_send') - $before, 1,
       'no memory for the body\'s buffer: the fault fired');
    is($raw, '', 'no memory for the body\'s buffer: the connection is closed, '
                 . 'no half answer');
    is(post('/open', seen('cut-1'))->{body},
       '{"accepted":0,"duplicates":1,"rejected":[]}',
       'no memory for the body\'s buffer: stored, the retry is a duplicate');
}

# --- the signature --------------------------------------------------------

for my $f (
    [ 'EVP_MAC_CTX_dup ngx_tiktok_reports_sig_begin 1', 500 ],
    [ 'malloc ngx_tiktok_reports_sig_begin 1', 500 ],
    [ 'EVP_MAC_update ngx_tiktok_reports_sig_update 1', 500 ],
    [ 'EVP_MAC_final ngx_tiktok_reports_sig_verify 1', 401 ],
) {
    my ($rule, $status) = @$f;
    my $id = 'sig-' . ++$n;
    case(name => "signature, $rule", rules => [ $rule ],
         request => sub { post('/sig', seen($id)) }, status => $status,
         check => sub { is($t->redis('EXISTS', "tiktok:msg:{$id}"), 0,
                           "signature, $rule: nothing stored") },
         after => sub { post('/sig', seen($id)) });
}

{
    my $key = MIME::Base64::decode_base64('MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw');
    my $std = sub {
        my $body = json_encode({ results => [ seen('std-1') ] });
        my $ts = time;
        return $t->http(method => 'POST', path => '/std', body => $body,
            headers => [ 'Content-Type' => 'application/json',
                         'webhook-id' => 'msg_1', 'webhook-timestamp' => $ts,
                         'webhook-signature' => 'v1,' . hmac_b64('sha256', $key,
                                                                "msg_1.$ts.$body") ]);
    };
    case(name => 'standard webhooks, no memory for the signed prefix',
         rules => [ 'ngx_pnalloc ngx_tiktok_reports_webhook_verify 1' ],
         request => $std, status => 500, after => $std);
}

# a body in a temp file: no buffer to read it into, or the read fails
{
    my @big = map { seen("big-$_") } 1 .. 20;
    case(name => 'a body in a file, no memory to read it',
         rules => [ 'ngx_palloc ngx_tiktok_reports_body_each 1' ],
         request => sub { post('/sig', @big) }, status => 500,
         after => sub { post('/sig', @big) });
    case(name => 'a body in a file that cannot be read',
         rules => [ 'ngx_read_file ngx_tiktok_reports_body_each 1' ],
         request => sub { post('/sig', @big) }, status => 500,
         check => sub { like($t->error_log, qr/tiktok_reports: cannot read the body file/,
                             'a body in a file that cannot be read: logged') },
         after => sub { post('/sig', @big) });
    case(name => 'a body in a file, read to parse, fails',
         rules => [ 'ngx_read_file ngx_tiktok_reports_body_each 2' ],
         request => sub { post('/sig', map { seen("big2-$_") } 1 .. 20) }, status => 500,
         check => sub { is($t->redis('EXISTS', 'tiktok:msg:{big2-1}'), 0,
                           '... nothing of it stored') },
         after => sub { post('/sig', @big) });
}

# --- Redis: calls, commands, connections ------------------------------------

{
    my @r = map { seen("part-$_") } 1 .. 250;
    case(name => 'the second of three calls cannot be made',
         rules => [ 'ngx_alloc ngx_tiktok_reports_store_call 2' ],
         request => sub { post('/open', @r) }, status => 503, body => $unavailable,
         check => sub {
             is_deeply([ map { $t->redis('EXISTS', "tiktok:msg:{part-$_}") } 1, 100, 101, 250 ],
                       [ 1, 1, 0, 0 ], '... the first call\'s reports stored, not the others');
         },
         after => sub {
             my $a = post('/open', @r);
             is($a->{body}, '{"accepted":150,"duplicates":100,"rejected":[]}',
                '... and the retry stores the rest, the first call\'s as duplicates');
             $a;
         });
}

case(name => 'no memory to format a command',
     rules => [ 'ngx_alloc ngx_tiktok_reports_node_format 1' ],
     request => sub { post('/open', seen('hr-1')) }, status => 503, body => $unavailable,
     after => sub { post('/open', seen('hr-1')) });

case(name => 'NOSCRIPT, and no memory to send the script again',
     rules => [ 'ngx_alloc ngx_tiktok_reports_node_format 2' ],
     request => sub { $t->redis('SCRIPT', 'FLUSH'); post('/open', seen('ns-1')) },
     status => 503, body => $unavailable,
     check => sub { like($t->error_log, qr/lost the script, reloading/,
                         'NOSCRIPT, and no memory to send the script again: it tried') },
     after => sub { post('/open', seen('ns-1')) });

{
    my @ids = map { "ring-$_" } 1 .. 100;
    my $q = '/st/?' . join '&', map { "id=$_" } @ids;
    case(name => 'no memory to grow the queue past 64 commands',
         rules => [ 'ngx_alloc ngx_tiktok_reports_node_push 1' ],
         request => sub { $t->http(path => $q) }, status => 503, body => $unavailable,
         after => sub { $t->http(path => $q) });
}

# the connection of database 5 dropped, and its reconnect meets the fault
sub reconnect_db5 {
    my (%c) = @_;
    my ($callee, $caller) = split ' ', $c{rule};
    my $before = fired($callee, $caller);
    my $st = 0;
    for (1 .. 50) {
        $st = post('/db5', seen('db5-warm'))->{status};
        last if $st == 200;
        sleep 0.1;
    }
    is($st, 200, "$c{name}: connected before");
    fault($dir, $c{rule});
    my ($id) = map { /^id=(\d+) .* db=5 /m ? $1 : () }
               split /\n/, $t->redis('CLIENT', 'LIST');
    $t->redis('CLIENT', 'KILL', 'ID', $id);
    for (1 .. 200) {
        last if fired($callee, $caller) > $before;
        sleep 0.01;
    }
    my $r = post('/db5', seen('db5-' . ++$n));
    no_fault($dir);
    is(fired($callee, $caller) - $before, 1, "$c{name}: fired");
    is($r->{status}, $c{status}, "$c{name}: $c{status}");
    like($t->error_log, $c{log}, "$c{name}: logged") if $c{log};
    $st = 0;
    for (1 .. 50) {
        $st = post('/db5', seen('db5-after'))->{status};
        last if $st == 200;
        sleep 0.1;
    }
    is($st, 200, "$c{name}: connected again");
}

# a reconnect that cannot be made, or whose handshake cannot be queued: the
# request meanwhile gets 503 (it comes while the next attempt is planned),
# the reason is logged, and the connection is made again later
reconnect_db5(name => 'a reconnect without memory for the reply reader',
              rule => 'redisReaderCreate ngx_tiktok_reports_conn_open 1', status => 503,
              log => qr/unavailable: cannot open a connection/);
reconnect_db5(name => 'a reconnect whose SELECT cannot be queued',
              rule => 'ngx_alloc ngx_tiktok_reports_node_format 1', status => 503,
              log => qr/unavailable: out of memory/);

# a SELECT that cannot be queued must not leave a connection that serves
# requests from database 0
{
    $t->redis('HSET', 'tiktok:msg:{db-x}', 'status', 'WRONG-DATABASE');
    $t->select_db(3);
    $t->redis('HSET', 'tiktok:msg:{db-x}', 'status', 'SEEN');
    $t->select_db(0);
    is($t->http(path => '/st3/db-x')->{body}, '{"messageId":"db-x","status":"SEEN"}',
       'database 3 is read');
    my $before = fired('ngx_alloc', 'ngx_tiktok_reports_node_format');
    fault($dir, 'ngx_alloc ngx_tiktok_reports_node_format 1');
    my ($id) = map { /^id=(\d+) .* db=3 /m ? $1 : () }
               split /\n/, $t->redis('CLIENT', 'LIST');
    $t->redis('CLIENT', 'KILL', 'ID', $id);
    for (1 .. 200) {
        last if fired('ngx_alloc', 'ngx_tiktok_reports_node_format') > $before;
        sleep 0.01;
    }
    my @bodies;
    for (1 .. 10) {
        push @bodies, $t->http(path => '/st3/db-x')->{body};
        last if $bodies[-1] =~ /SEEN/;
        sleep 0.1;
    }
    no_fault($dir);
    is(fired('ngx_alloc', 'ngx_tiktok_reports_node_format') - $before, 1,
       'a SELECT that cannot be queued: the fault fired');
    ok(!grep({ /WRONG-DATABASE/ } @bodies),
       'a SELECT that cannot be queued: no lookup reads database 0')
        or diag join "\n", @bodies;
    like($bodies[-1], qr/"status":"SEEN"/, 'connected again: database 3 is read');
}

# epoll refusing the connection's read event: the connection is dropped
# with the reason, the request gets 503, and the next connection serves
reconnect_db5(name => 'epoll refuses the read event',
              rule => 'ngx_handle_read_event ngx_tiktok_reports_conn_read 1', status => 503,
              log => qr/unavailable: cannot add a read event/);

# the reply reader cannot take what came: the connection is dropped
reconnect_db5(name => 'no memory for what came from Redis',
              rule => 'redisReaderFeed ngx_tiktok_reports_conn_read 1', status => 503,
              log => qr/unavailable: out of memory/);

# --- the lookup --------------------------------------------------------------

post('/open', seen('lk-1'), seen('lk-2'));
for my $f (
    [ '/st/lk-1', 'ngx_array_create ngx_tiktok_reports_status_handler 1', 500 ],
    [ '/st/lk-1', 'ngx_array_push ngx_tiktok_reports_status_unescape 1', 500 ],
    [ '/st/lk-1', 'ngx_pnalloc ngx_tiktok_reports_status_unescape 1', 500 ],
    [ '/st/lk-1', 'ngx_pcalloc ngx_tiktok_reports_status_lookup 1', 500 ],
    [ '/st/lk-1', 'ngx_pcalloc ngx_tiktok_reports_status_lookup 2', 500 ],
    [ '/st/lk-1', 'ngx_calloc ngx_tiktok_reports_wait_create 1', 500 ],
    [ '/st/lk-1', 'ngx_pnalloc ngx_tiktok_reports_status_lookup 1', 503 ],
    [ '/st/?id=lk-1&id=lk-2&id=lk-3', 'ngx_pnalloc ngx_tiktok_reports_status_lookup 2', 503 ],
    [ '/st/lk-1', 'ngx_pnalloc ngx_tiktok_reports_status_render 1', 503 ],
    [ '/st/lk-none', 'ngx_pnalloc ngx_tiktok_reports_status_answer 1', 500 ],
    [ '/st/?id=lk-1&id=lk-none', 'ngx_pnalloc ngx_tiktok_reports_status_answer 1', 500 ],
    [ '/st/lk-1', 'ngx_alloc ngx_tiktok_reports_store_command 1', 503 ],
) {
    my ($path, $rule, $status) = @$f;
    case(name => "lookup $path, $rule", rules => [ $rule ],
         request => sub { $t->http(path => $path) }, status => $status,
         after => sub { $t->http(path => $path) },
         after_status => $path eq '/st/lk-none' ? 404 : 200);
}

{
    my $ids = sub { $t->http(method => 'POST', path => '/st/', body => $_[0] // '{"ids":["lk-1","lk-2"]}',
                             headers => [ 'Content-Type' => 'application/json' ]) };
    case(name => 'POST lookup, no memory for the ids',
         rules => [ 'ngx_array_create ngx_tiktok_reports_status_body 1' ],
         request => $ids, status => 500, after => $ids);
    case(name => 'POST lookup, no memory for yajl',
         rules => [ 'yajl_alloc ngx_tiktok_reports_status_body 1' ],
         request => $ids, status => 500, after => $ids);
    for my $rule ('ngx_array_push ngx_tiktok_reports_ids_string 1',
                  'ngx_pnalloc ngx_tiktok_reports_ids_string 1') {
        my $before = fired((split ' ', $rule)[0, 1]);
        fault($dir, $rule);
        my $r = $ids->();
        no_fault($dir);
        is(fired((split ' ', $rule)[0, 1]) - $before, 1, "POST lookup, $rule: fired");
        is($r->{status}, 500, "POST lookup, $rule: a server error, not the body's")
            or diag $r->{body};
        is($ids->()->{status}, 200, "POST lookup, $rule: then served again");
    }
}

# --- the parser's own allocations ------------------------------------------

{
    my $before = fired('ngx_palloc', 'ngx_tiktok_reports_webhook_alloc');
    fault($dir, 'ngx_palloc ngx_tiktok_reports_webhook_alloc 3');
    my $r = post('/open', seen('po-1'));
    no_fault($dir);
    is(fired('ngx_palloc', 'ngx_tiktok_reports_webhook_alloc') - $before, 1,
       'no memory inside the parser: fired');
    is($r->{status}, 500, 'no memory inside the parser: a server error, so '
                          . 'Infobip retries, not 400 for a good body')
        or diag $r->{body};
    is($t->redis('EXISTS', 'tiktok:msg:{po-1}'), 0, 'no memory inside the parser: nothing stored');
    is(post('/open', seen('po-1'))->{status}, 200, 'no memory inside the parser: then served');
}

# --- metrics -----------------------------------------------------------------

case(name => 'health, no memory for the answer',
     rules => [ 'ngx_pnalloc ngx_tiktok_reports_health_handler 1' ],
     request => sub { $t->http(path => '/health') }, status => 500,
     after => sub { $t->http(path => '/health') });

case(name => 'metrics, no memory for the text',
     rules => [ 'ngx_pnalloc ngx_tiktok_reports_metrics_handler 1' ],
     request => sub { $t->http(path => '/metrics') }, status => 500,
     after => sub { $t->http(path => '/metrics') });

$t->stop_nginx;
{
    # the faults above are the only crit, alert or emerg lines allowed: none
    $t->check_logs;
}

# --- nginx -t: the configuration cannot be built -----------------------------

my $c = TikTokTest->new;
my $cdir = $c->dir;
my $conf = <<'EOF';
        location = /h {
            tiktok_reports_webhook;
            tiktok_reports_signature hmac-sha256;
            tiktok_reports_secret k;
        }
        location = /s {
            tiktok_reports_webhook;
            tiktok_reports_signature standard-webhooks;
            tiktok_reports_secret whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw;
        }
        location = /f {
            tiktok_reports_webhook;
            tiktok_reports_signature hmac-sha1;
            tiktok_reports_secret_file secrets;
        }
        location /st/ {
            tiktok_reports_status;
        }
EOF
{
    open my $fh, '>', "$cdir/secrets" or die;
    print $fh "one\ntwo\n";
    close $fh;
}
my ($rc, $out) = $c->nginx_test_conf(server => $conf);
is($rc, 0, 'nginx -t without faults passes') or diag $out;

for my $f (
    [ 'EVP_MAC_fetch ngx_tiktok_reports_sig_conf_create 1',
      qr/"tiktok_reports_signature": EVP_MAC_fetch\("HMAC"\) failed/ ],
    [ 'calloc ngx_tiktok_reports_sig_conf_create 1',
      qr/"tiktok_reports_signature": out of memory/ ],
    [ 'EVP_MAC_CTX_new ngx_tiktok_reports_sig_conf_create 1',
      qr/"tiktok_reports_signature": EVP_MAC_CTX_new\(\) failed/ ],
    [ 'EVP_MAC_init ngx_tiktok_reports_sig_conf_create 1',
      qr/"tiktok_reports_signature": digest "sha256" is not available in OpenSSL/ ],
    [ 'EVP_MAC_CTX_new ngx_tiktok_reports_sig_add_key 1',
      qr/"tiktok_reports_secret": EVP_MAC_CTX_new\(\) failed/ ],
    [ 'EVP_MAC_init ngx_tiktok_reports_sig_add_key 1',
      qr/"tiktok_reports_secret": EVP_MAC_init\(\) failed/ ],
    [ 'malloc ngx_tiktok_reports_sig_conf_add_secret 1',
      qr/"tiktok_reports_secret": out of memory/ ],
    [ 'EVP_Digest ngx_tiktok_reports_store_sha 1', qr/test failed/ ],
    [ 'ngx_pcalloc ngx_tiktok_reports_store_get 1', qr/test failed/ ],
    [ 'ngx_array_push ngx_tiktok_reports_store_get 1', qr/test failed/ ],
    [ 'ngx_pcalloc ngx_tiktok_reports_create_main_conf 1', qr/test failed/ ],
    [ 'ngx_pcalloc ngx_tiktok_reports_create_loc_conf 1', qr/test failed/ ],
    [ 'ngx_array_create ngx_tiktok_reports_redis 1', qr/test failed/ ],
    [ 'ngx_pnalloc ngx_tiktok_reports_merge_store 1', qr/test failed/ ],
    [ 'ngx_pnalloc ngx_tiktok_reports_merge_transition 1', qr/test failed/ ],
    [ 'ngx_pool_cleanup_add ngx_tiktok_reports_merge_signature 1', qr/test failed/ ],
    [ 'ngx_pnalloc ngx_tiktok_reports_secret_file 1', qr/test failed/ ],
    [ 'ngx_array_create ngx_tiktok_reports_secret_push 1', qr/test failed/ ],
    [ 'ngx_array_push ngx_tiktok_reports_secret_push 2', qr/test failed/ ],
    [ 'ngx_array_push ngx_tiktok_reports_metrics_init 1', qr/test failed/ ],
) {
    my ($rule, $re) = @$f;
    fault($cdir, $rule);
    my ($rc, $out) = $c->nginx_test_conf(server => $conf);
    no_fault($cdir);
    my ($callee, $caller) = split ' ', $rule;
    like($out, qr/tiktok_reports fault: \Q$callee\E in \Q$caller\E/, "nginx -t, $rule: fired");
    isnt($rc, 0, "nginx -t, $rule: refused");
    like($out, $re, "nginx -t, $rule: says so") or diag $out;
}

# the default address too needs memory
{
    fault($cdir, 'ngx_pcalloc ngx_tiktok_reports_merge_store 1');
    my ($rc, $out) = $c->nginx_test_conf(server => $conf, no_redis => 1);
    no_fault($cdir);
    like($out, qr/tiktok_reports fault: ngx_pcalloc in ngx_tiktok_reports_merge_store/,
         'nginx -t, no memory for the default address: fired');
    isnt($rc, 0, 'nginx -t, no memory for the default address: refused');
}

# a worker that cannot make its Redis connection's state does not start
{
    my $w = TikTokTest->new(allow_log => qr/exited with fatal code 2 and cannot be respawned/);
    $w->start_redis;
    fault($w->dir, 'ngx_palloc ngx_tiktok_reports_store_init_worker 1');
    $w->start_nginx(server => "location = /open { tiktok_reports_webhook; "
                              . "tiktok_reports_signature off; }\n");
    my $log = '';
    for (1 .. 100) {
        $log = $w->error_log;
        last if $log =~ /cannot be respawned/;
        sleep 0.1;
    }
    like($log, qr/tiktok_reports fault: ngx_palloc in ngx_tiktok_reports_store_init_worker/,
         'worker start: the fault fired');
    like($log, qr/worker process \d+ exited with fatal code 2 and cannot be respawned/,
         'worker start: the worker gives up, and nginx says so');
    $w->stop_nginx;
    $w->check_logs;
}

done_testing;
