#!/usr/bin/perl
# How a message's events are stored (docs/redis-schema.md): each a field
# of its own, "@d<status.id> <time>" or "@s <time>", the time as ms when it
# is in Infobip's own form (+0000, ms), else the text as sent ("=" before
# a text of digits only); the lookup shows each time exactly as sent.  A
# delivered and seen message with a short callbackData stays a listpack,
# within the contract's 500 bytes.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use TikTokTest;

my $t = TikTokTest->new;
$t->start_redis;
$t->start_nginx(server => <<'EOF');
        location = /webhook {
            tiktok_reports_webhook;
            tiktok_reports_signature off;
        }
        location /status/ {
            tiktok_reports_status;
        }
        location = /lines {
            tiktok_reports_webhook;
            tiktok_reports_signature off;
            tiktok_reports_timeline lines;
        }
EOF

sub post {
    my (@results) = @_;
    my $r = $t->http(method => 'POST', path => '/webhook',
                     headers => [ 'Content-Type' => 'application/json' ],
                     body => json_encode({ results => \@results }));
    is($r->{status}, 200, 'stored') or diag($r->{body});
}

my $id = "ev-$$";
post(tiktok_dlr(id => $id, group => 'PENDING', name => 'PENDING_ENROUTE',
                status_id => 7, doneAt => '2023-09-26T07:52:15.100-0300'),
     tiktok_dlr(id => $id, doneAt => '2023-09-26T10:52:15.799+0000',
                callbackData => 'order-12345'),
     tiktok_dlr(id => $id, status_id => 6, doneAt => '1695725535800'),
     tiktok_dlr(id => $id, status_id => 8, doneAt => '=x'),
     tiktok_seen(id => $id, seenAt => '2019-11-09T16:00:05.000+0000'));

my $h = $t->hgetall("tiktok:msg:{$id}");
my @fields = sort grep { /^@/ } keys %$h;
is_deeply(\@fields, [ '@d5 1695725535799', '@d6 =1695725535800',
                      '@d7 2023-09-26T07:52:15.100-0300', '@d8 ==x',
                      '@s 1573315205000' ],
          'each event a field: ms for Infobip\'s form, else the text');
like($h->{'@d7 2023-09-26T07:52:15.100-0300'}, qr/^1\|P\|\d{13}\|PENDING_ENROUTE$/,
     'a value: the event\'s number, status group, receivedAt, statusName');
like($h->{'@s 1573315205000'}, qr/^5\|S\|\d{13}$/, '... and for a seen report');
is($h->{te}, 5, 'te: the number of the last event');
ok(!exists $h->{timeline}, 'no timeline lines');

my $l = json_decode($t->http(path => "/status/$id")->{body});
is_deeply([ map { "$_->{kind} " . ($_->{id} // '-') . " $_->{at} $_->{status}" } @{ $l->{timeline} } ],
          [ 'delivery 7 2023-09-26T07:52:15.100-0300 PENDING',
            'delivery 5 2023-09-26T10:52:15.799+0000 DELIVERED',
            'delivery 6 1695725535800 DELIVERED',
            'delivery 8 =x DELIVERED',
            'seen - 2019-11-09T16:00:05.000+0000 SEEN' ],
          'the lookup: every time as sent, in order');
is($l->{timeline}[1]{statusName}, 'DELIVERED_TO_HANDSET', '... with statusName');
like($l->{timeline}[4]{receivedAt}, qr/^\d{13}$/, '... and receivedAt');

# the same events again: duplicates, whatever the form of their time
my $r = $t->http(method => 'POST', path => '/webhook',
                 headers => [ 'Content-Type' => 'application/json' ],
                 body => json_encode({ results => [
                     tiktok_dlr(id => $id, doneAt => '2023-09-26T10:52:15.799+0000'),
                     tiktok_dlr(id => $id, status_id => 6, doneAt => '1695725535800'),
                     tiktok_dlr(id => $id, status_id => 8, doneAt => '=x'),
                     tiktok_dlr(id => $id, group => 'PENDING', name => 'PENDING_ENROUTE',
                                status_id => 7, doneAt => '2023-09-26T07:52:15.100-0300') ] }));
is($r->{body}, '{"accepted":0,"duplicates":4,"rejected":[]}', 'sent again: duplicates');

# memory: a delivered and seen message, short callbackData, default config
my $m = "mem-$$";
post(tiktok_dlr(id => $m, callbackData => 'order-12345'));
post(tiktok_seen(id => $m));
is($t->redis('OBJECT', 'ENCODING', "tiktok:msg:{$m}"), 'listpack',
   'a delivered and seen message is a listpack');
my $bytes = $t->redis('MEMORY', 'USAGE', "tiktok:msg:{$m}", 'SAMPLES', 0);
cmp_ok($bytes, '<=', 500, "... of at most 500 bytes ($bytes)");

# the older form (tiktok_reports_timeline lines): a statusName that grows
# most when escaped, in a full call, stored and shown exactly
{
    my $name = ("\x01" x 60) . ('"' x 30) . ('\\' x 10);
    my @r = map { tiktok_dlr(id => "esc-$$-$_", name => $name) } 1 .. 100;
    my $r = $t->http(method => 'POST', path => '/lines',
                     headers => [ 'Content-Type' => 'application/json' ],
                     body => json_encode({ results => \@r }));
    is($r->{body}, '{"accepted":100,"duplicates":0,"rejected":[]}',
       'lines: 100 reports whose statusName is mostly escapes');
    my $h = $t->hgetall("tiktok:msg:{esc-$$-7}");
    ok(exists $h->{timeline} && !grep({ /^@/ } keys %$h), '... kept as a line');
    my $l = json_decode($t->http(path => "/status/esc-$$-7")->{body});
    is($l->{timeline}[0]{statusName}, $name, '... and shown as sent');
    is($l->{statusName}, $name, '... in the details too');
}

$t->stop_nginx;
$t->check_logs;

done_testing;
