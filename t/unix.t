#!/usr/bin/perl
# Redis over a unix socket, with an ACL user ("user password"), and two
# locations on different Redis databases sharing nothing but nginx.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use TikTokTest;

my $t = TikTokTest->new;
my $sock = $t->dir . '/redis.sock';
$t->start_redis(extra => "unixsocket $sock\nunixsocketperm 777\n"
    . "user reports on >reports-pw ~tiktok:* ~other:* &* +\@all\n");

$t->start_nginx(server => <<"EOF2");
        location = /unix {
            tiktok_reports_redis unix:$sock;
            tiktok_reports_redis_password reports reports-pw;
            tiktok_reports_webhook;
            tiktok_reports_signature off;
        }
        location = /db5 {
            tiktok_reports_redis_db 5;
            tiktok_reports_key_prefix "other:";
            tiktok_reports_webhook;
            tiktok_reports_signature off;
        }
        location = /wrong-user {
            tiktok_reports_redis unix:$sock;
            tiktok_reports_redis_password reports not-the-password;
            tiktok_reports_webhook;
            tiktok_reports_signature off;
        }
        location /unix/status/ {
            tiktok_reports_redis unix:$sock;
            tiktok_reports_redis_password reports reports-pw;
            tiktok_reports_status;
        }
EOF2

sub post {
    my ($path, $id) = @_;
    return $t->http(method => 'POST', path => $path,
        headers => [ 'Content-Type' => 'application/json' ],
        body => json_encode({ results => [ tiktok_dlr(id => $id) ] }));
}

my $r = post('/unix', 'unix-1');
is($r->{body}, '{"accepted":1,"duplicates":0,"rejected":[]}',
   'over a unix socket, as an ACL user');
is($t->redis('HGET', 'tiktok:msg:{unix-1}', 'status'), 'DELIVERED', 'stored');

$r = $t->http(path => '/unix/status/unix-1');
is($r->{status}, 200, 'lookup over the same socket');

$r = post('/db5', 'db5-1');
is($r->{status}, 200, 'another database, over TCP');
is($t->redis('EXISTS', 'other:msg:{db5-1}'), 0, 'not in database 0');
$t->select_db(5);
is($t->redis('HGET', 'other:msg:{db5-1}', 'status'), 'DELIVERED', 'in database 5');
$t->select_db(0);

$r = post('/wrong-user', 'wrong-1');
is($r->{status}, 503, 'a refused AUTH: 503');
is($t->redis('EXISTS', 'tiktok:msg:{wrong-1}'), 0, 'and nothing written');
like($t->error_log, qr/tiktok_reports: redis unix:\S+ unavailable: AUTH refused: WRONGPASS/,
     'the refusal is logged');
unlike($t->error_log, qr/not-the-password|reports-pw/, 'the password is not logged');

$r = post('/unix', 'unix-2');
is($r->{status}, 200, 'the good location is not affected');

$t->stop_nginx;
$t->check_logs;

done_testing;
