#!/usr/bin/perl
# examples/feed-consumer against the module: reports posted to the webhook
# come out of the consumer once each and are acknowledged; a restart joins
# the existing group (BUSYGROUP) where it was; "$" and "0" start a new group
# at the end or the start of the feed; the hash can be ahead of the change
# being read; entries of a crashed consumer are claimed (XAUTOCLAIM), this
# consumer's own unacknowledged ones handled first, trimmed ones reported;
# and, for the feed to come, repeats by (messageId, seq) are dropped and
# partitions tiktok:events:{p} read.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use TikTokTest;

my $consumer = "$FindBin::Bin/../examples/feed-consumer";

plan skip_all => 'python3-redis is not installed (.ci/test installs it)'
    if system('/usr/bin/python3 -c "import redis" 2>/dev/null') != 0;

my $t = TikTokTest->new;
$t->start_redis;
$t->start_nginx(server => <<'EOF');
        location = /webhook {
            tiktok_reports_webhook;
            tiktok_reports_signature off;
            tiktok_reports_redis_timeout 10s;
        }
EOF

my $redis = 'redis://127.0.0.1:' . $t->redis_port . '/0';
my $feed = 'tiktok:events';

sub post {
    my $body = json_encode({ results => [ @_ ] });
    my $res = $t->http(method => 'POST', path => '/webhook', body => $body,
                       headers => [ 'Content-Type' => 'application/json' ]);
    return $res && $res->{status};
}

# runs the consumer once; returns (decoded stdout lines, stderr, exit code)
sub consume {
    my (@args) = @_;
    my $err = $t->dir . '/consumer.err';
    my $out = `$consumer --redis $redis --once --block 200 @args 2>$err`;
    my $rc = $? >> 8;
    my @lines = map { json_decode($_) } grep { /\S/ } split /\n/, $out;
    open my $fh, '<', $err or die $!;
    local $/;
    return (\@lines, scalar <$fh>, $rc);
}

sub pending {
    my ($group, $stream) = @_;
    return $t->redis('XPENDING', $stream || $feed, $group)->[0];
}

sub ids_of { [ map { "$_->{messageId} $_->{status}" } @{ $_[0] } ] }

# --- the happy path --------------------------------------------------------

is(post(tiktok_dlr(id => 'c-1')), 200, 'a delivery report is stored');
my ($lines, $err, $rc) = consume(qw(--group billing --consumer b-1 --start 0 --stats));
is($rc, 0, 'the consumer exits 0') or diag $err;
like($err, qr/created group billing on tiktok:events at 0/, 'it creates the group');
is_deeply(ids_of($lines), [ 'c-1 DELIVERED' ], 'it prints the change');
is($lines->[0]{previous}, '', 'previous is empty for a new message');
is($lines->[0]{at}, '2023-09-26T10:52:15.799+0000', 'at is the report\'s doneAt');
like($lines->[0]{id}, qr/^\d+-\d+$/, 'with the entry id');
is(pending('billing'), 0, 'and acknowledges it');
like($err, qr/"lag": 0/, 'XINFO GROUPS: lag 0 once all is read');

# --- a restart: BUSYGROUP, the group goes on where it was ------------------

is(post(tiktok_seen(id => 'c-2')), 200, 'a seen report is stored');
($lines, $err, $rc) = consume(qw(--group billing --consumer b-1 --start 0));
is($rc, 0, 'the restarted consumer exits 0') or diag $err;
like($err, qr/group billing on tiktok:events exists/, 'BUSYGROUP: it joins the existing group');
is_deeply(ids_of($lines), [ 'c-2 SEEN' ],
          'and reads on from its position, not from 0 again');

# --- $ and 0 for a new group -----------------------------------------------

($lines) = consume(qw(--group audit --consumer a-1 --start 0));
is_deeply(ids_of($lines), [ 'c-1 DELIVERED', 'c-2 SEEN' ], 'a new group at 0 reads all the feed holds');
($lines) = consume(qw(--group alerts --consumer x-1), '--start', '$');
is_deeply(ids_of($lines), [], 'a new group at $ reads nothing of the past');
post(tiktok_dlr(id => 'c-3', group => 'UNDELIVERABLE', name => 'UNDELIVERABLE_NOT_DELIVERED',
                status_id => 9));
($lines) = consume(qw(--group alerts --consumer x-1));
is_deeply(ids_of($lines), [ 'c-3 UNDELIVERABLE' ], 'and the changes after its creation');

# --- the hash is ahead of the entry being read -----------------------------

post(tiktok_dlr(id => 'c-4'));
post(tiktok_seen(id => 'c-4'));
($lines) = consume(qw(--group billing --consumer b-1));
is_deeply(ids_of($lines), [ 'c-3 UNDELIVERABLE', 'c-4 DELIVERED', 'c-4 SEEN' ], 'both changes of c-4, in order');
is($lines->[1]{current}, 'SEEN', 'while DELIVERED is handled, the hash already says SEEN');
is($lines->[2]{previous}, 'DELIVERED', 'the second change names the first as previous');

# --- a crashed consumer: its entries are claimed -----------------------------

post(tiktok_dlr(id => 'c-5'));
my $r = $t->redis('XREADGROUP', 'GROUP', 'billing', 'b-crashed', 'COUNT', '10', 'STREAMS', $feed, '>');
is(scalar @{ $r->[0][1] }, 1, 'another consumer reads c-5 and dies before XACK');
is(pending('billing'), 1, 'c-5 is pending');
($lines, $err) = consume(qw(--group billing --consumer b-1 --claim-idle 600000));
is_deeply(ids_of($lines), [], 'not claimed before --claim-idle');
select undef, undef, undef, 0.3;
($lines, $err) = consume(qw(--group billing --consumer b-1 --claim-idle 200));
like($err, qr/claimed 1 entries on tiktok:events/, 'XAUTOCLAIM takes it over');
is_deeply(ids_of($lines), [ 'c-5 DELIVERED' ], 'and handles it');
is(pending('billing'), 0, 'and acknowledges it');

# --- its own unacknowledged entries first, after a restart -------------------

post(tiktok_dlr(id => 'c-6'));
$t->redis('XREADGROUP', 'GROUP', 'billing', 'b-1', 'COUNT', '10', 'STREAMS', $feed, '>');
post(tiktok_dlr(id => 'c-7'));
($lines) = consume(qw(--group billing --consumer b-1));
is_deeply(ids_of($lines), [ 'c-6 DELIVERED', 'c-7 DELIVERED' ],
          'what b-1 read before it stopped comes first, then the new');
is(pending('billing'), 0, 'both acknowledged');

# --- entries trimmed before they were handled --------------------------------

post(tiktok_dlr(id => 'c-8'));
post(tiktok_dlr(id => 'c-9'));
$t->redis('XREADGROUP', 'GROUP', 'billing', 'b-1', 'COUNT', '1', 'STREAMS', $feed, '>');
$t->redis('XREADGROUP', 'GROUP', 'billing', 'b-gone', 'COUNT', '1', 'STREAMS', $feed, '>');
is(pending('billing'), 2, 'c-8 read by b-1, c-9 by b-gone, neither acknowledged');
$t->redis('XTRIM', $feed, 'MAXLEN', '0');   # as MAXLEN ~ does to a slow group
select undef, undef, undef, 0.3;
($lines, $err) = consume(qw(--group billing --consumer b-1 --claim-idle 200));
is_deeply(ids_of($lines), [], 'nothing to handle: both were trimmed');
like($err, qr/1 entries trimmed before they were handled/, 'its own trimmed entry is reported');
like($err, qr/1 claimed entries were trimmed before they were handled/,
     'the crashed consumer\'s trimmed entry is reported');
is(pending('billing'), 0, 'and neither stays pending');
($lines) = consume(qw(--group billing --consumer b-1));
is_deeply(ids_of($lines), [], 'nothing more');

# --- what the feed will carry: seq, and partitions -------------------------

my @e = (messageId => 's-1', previous => '', at => '2026-12-01T00:00:00.000+0000');
$t->redis('XADD', $feed, '*', @e, status => 'DELIVERED', seq => 1);
$t->redis('XADD', $feed, '*', @e, status => 'DELIVERED', seq => 1);   # written twice
$t->redis('XADD', $feed, '*', @e, status => 'SEEN', seq => 2);
($lines, $err) = consume(qw(--group billing --consumer b-1));
is_deeply([ map { "$_->{messageId} $_->{status} $_->{seq}" } @$lines ],
          [ 's-1 DELIVERED 1', 's-1 SEEN 2' ], 'a repeated (messageId, seq) is handled once');
like($err, qr/skipped .* s-1 seq 1 already passed/, 'and the repeat is reported');
is(pending('billing'), 0, 'the repeat is acknowledged too');

$t->redis('XADD', "$feed:{$_}", '*', messageId => "p-$_", status => 'PENDING',
          previous => '', at => '', seq => 1) for 0 .. 2;
($lines) = consume(qw(--group part --consumer p-1 --start 0 --partitions 3));
is_deeply([ sort map { "$_->{stream} $_->{messageId}" } @$lines ],
          [ map { "tiktok:events:{$_} p-$_" } 0 .. 2 ], 'all partitions by default');
($lines) = consume(qw(--group part2 --consumer p-1 --start 0 --partitions 3 --partition 1));
is_deeply(ids_of($lines), [ 'p-1 PENDING' ], '--partition reads its share only');
(undef, $err, $rc) = consume(qw(--group part3 --partitions 3 --partition 3));
isnt($rc, 0, 'a partition past --partitions is refused');

# --- stops within --seconds, and on SIGTERM --------------------------------

my $t0 = time;
my $out = `$consumer --redis $redis --group billing --consumer b-1 --block 200 --seconds 1 2>/dev/null`;
is($? >> 8, 0, '--seconds 1 ends by itself');
ok(time - $t0 <= 4, 'in time');

$t->check_logs;
done_testing;
