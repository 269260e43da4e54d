#!/usr/bin/perl
# Status never goes backwards: reports out of order and twice, each
# sequence checked against the contract's precedence, timeline and feed.

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
        location = /keep {
            tiktok_reports_webhook;
            tiktok_reports_signature off;
            tiktok_reports_keep_reports on;
            tiktok_reports_key_prefix "keep:";
        }
EOF

my %EV = (
    pending   => sub { tiktok_dlr(id => $_[0], group => 'PENDING',
                                  status_id => 7, name => 'PENDING_ENROUTE',
                                  doneAt => '2023-09-26T10:52:10.000+0000') },
    accepted  => sub { tiktok_dlr(id => $_[0], group => 'ACCEPTED',
                                  status_id => 26, name => 'PENDING_ACCEPTED',
                                  doneAt => '2023-09-26T10:52:09.000+0000') },
    operator  => sub { tiktok_dlr(id => $_[0], status_id => 2,
                                  name => 'DELIVERED_TO_OPERATOR',
                                  doneAt => '2023-09-26T10:52:11.000+0000') },
    # the same instant as "operator" minus one second, in another offset
    handset   => sub { tiktok_dlr(id => $_[0], status_id => 5,
                                  name => 'DELIVERED_TO_HANDSET',
                                  doneAt => '2023-09-26T07:52:12.000-0300') },
    seen      => sub { tiktok_seen(id => $_[0]) },
    seen2     => sub { tiktok_seen(id => $_[0],
                                   seenAt => '2023-09-27T10:00:00.000+0000') },
    expired   => sub { tiktok_dlr(id => $_[0], group => 'EXPIRED',
                                  status_id => 15, name => 'EXPIRED_EXPIRED',
                                  error_name => 'EC_ABSENT_SUBSCRIBER',
                                  doneAt => '2023-09-28T10:52:15.000+0000') },
    rejected  => sub { tiktok_dlr(id => $_[0], group => 'REJECTED',
                                  status_id => 6, name => 'REJECTED_NETWORK',
                                  permanent => 1,
                                  doneAt => '2023-09-29T10:52:15.000+0000') },
    undeliv   => sub { tiktok_dlr(id => $_[0], group => 'UNDELIVERABLE',
                                  status_id => 9,
                                  name => 'UNDELIVERABLE_NOT_DELIVERED',
                                  doneAt => '2023-09-26T10:53:00.000+0000') },
);

# sequence of events (each its own request), then the expected hash fields,
# the number of timeline lines, and the number of feed entries
my @cases = (
    [ 'seen before delivered', [qw(seen handset)],
      { status => 'SEEN', statusName => 'DELIVERED_TO_HANDSET',
        seenAt => '2019-11-09T16:00:05.000+0000' }, 2, 1 ],
    [ 'delivered then seen', [qw(handset seen)],
      { status => 'SEEN', statusName => 'DELIVERED_TO_HANDSET' }, 2, 2 ],
    [ 'late PENDING after DELIVERED', [qw(handset pending)],
      { status => 'DELIVERED', statusName => 'DELIVERED_TO_HANDSET' }, 2, 1 ],
    [ 'late PENDING after SEEN', [qw(seen pending)],
      { status => 'SEEN', statusName => 'PENDING_ENROUTE' }, 2, 1 ],
    [ 'PENDING then DELIVERED', [qw(pending handset)],
      { status => 'DELIVERED', statusName => 'DELIVERED_TO_HANDSET' }, 2, 2 ],
    [ 'ACCEPTED is PENDING', [qw(accepted)],
      { status => 'PENDING', statusName => 'PENDING_ACCEPTED' }, 1, 1 ],
    [ 'TO_OPERATOR then TO_HANDSET', [qw(operator handset)],
      { status => 'DELIVERED', statusName => 'DELIVERED_TO_HANDSET',
        doneAt => '2023-09-26T07:52:12.000-0300' }, 2, 1 ],
    [ 'TO_HANDSET then TO_OPERATOR (later doneAt wins)', [qw(handset operator)],
      { status => 'DELIVERED', statusName => 'DELIVERED_TO_HANDSET' }, 2, 1 ],
    [ 'EXPIRED then REJECTED keeps EXPIRED', [qw(expired rejected)],
      { status => 'EXPIRED', statusName => 'EXPIRED_EXPIRED',
        errorName => 'EC_ABSENT_SUBSCRIBER', errorPermanent => 'false' },
      2, 1 ],
    [ 'REJECTED then EXPIRED keeps REJECTED', [qw(rejected expired)],
      { status => 'REJECTED', statusName => 'REJECTED_NETWORK',
        errorPermanent => 'true' }, 2, 1 ],
    [ 'late failure never undoes DELIVERED', [qw(handset undeliv)],
      { status => 'DELIVERED', statusName => 'DELIVERED_TO_HANDSET' }, 2, 1 ],
    [ 'failure then DELIVERED', [qw(undeliv handset)],
      { status => 'DELIVERED', statusName => 'DELIVERED_TO_HANDSET' }, 2, 2 ],
    [ 'two seen reports: the first stays', [qw(seen seen2)],
      { status => 'SEEN', seenAt => '2019-11-09T16:00:05.000+0000' }, 2, 1 ],
    [ 'every report twice', [qw(pending pending operator operator handset
                                 handset seen seen)],
      { status => 'SEEN', statusName => 'DELIVERED_TO_HANDSET' }, 4, 3 ],
);

my $n = 0;
for my $c (@cases) {
    my ($name, $seq, $want, $lines, $feed) = @$c;
    my $id = 'seq-' . ++$n;
    my $before = $t->redis('XLEN', 'tiktok:events');
    my %seen_ev;
    for my $ev (@$seq) {
        my $res = $t->http(method => 'POST', path => '/webhook',
            headers => [ 'Content-Type' => 'application/json' ],
            body => json_encode({ results => [ $EV{$ev}->($id) ] }));
        my $dup = $seen_ev{$ev}++ ? 1 : 0;
        is($res->{body}, '{"accepted":' . (1 - $dup) . ',"duplicates":'
           . $dup . ',"rejected":[]}', "$name: $ev answered");
    }
    my $h = $t->hgetall("tiktok:msg:{$id}");
    is($h->{$_}, $want->{$_}, "$name: $_") for sort keys %$want;
    my @tl = events_of($h);
    is(scalar @tl, $lines, "$name: timeline events");
    ok(!grep({ !/^\@[ds]\S* [^=]+=\d+\|[PUDERS]\|\d{13}(\|.*)?$/ } @tl),
       "$name: each event a field of its own");
    is($t->redis('XLEN', 'tiktok:events') - $before, $feed,
       "$name: feed entries");
}

# the feed tells previous and new status in order
{
    my $entries = $t->redis('XRANGE', 'tiktok:events', '-', '+');
    my @for = grep { my %f = @{ $_->[1] }; $f{messageId} eq 'seq-5' }
              @$entries;
    is_deeply([ map { my %f = @{ $_->[1] }; "$f{previous}>$f{status}" } @for ],
              [ '>PENDING', 'PENDING>DELIVERED' ], 'feed: previous > status');
}

# keep_reports: the raw reports as JSON objects, every member kept
{
    my $dlr = $EV{handset}->('keep-1');
    $dlr->{unknownMember} = { nested => [ 1, "two", { three => JSON::PP::true } ] };
    my $res = $t->http(method => 'POST', path => '/keep',
        headers => [ 'Content-Type' => 'application/json' ],
        body => json_encode({ results => [ $dlr, $EV{seen}->('keep-1') ] }));
    is($res->{status}, 200, 'keep_reports: 200');
    my $h = $t->hgetall('keep:msg:{keep-1}');
    is_deeply(json_decode($h->{delivery}), json_decode(json_encode($dlr)),
              'keep_reports: delivery is the report as sent');
    is_deeply(json_decode($h->{seen}),
              json_decode(json_encode($EV{seen}->('keep-1'))),
              'keep_reports: seen is the report as sent');
    is($h->{status}, 'SEEN', 'keep_reports: status');
}

# keep_reports, seen first: a message's first report keeps its raw report
# too, and the later delivery still brings its own
{
    my $res = $t->http(method => 'POST', path => '/keep',
        headers => [ 'Content-Type' => 'application/json' ],
        body => json_encode({ results => [ $EV{seen}->('keep-2') ] }));
    is($res->{status}, 200, 'keep_reports seen first: 200');
    my $h = $t->hgetall('keep:msg:{keep-2}');
    is_deeply(json_decode($h->{seen}),
              json_decode(json_encode($EV{seen}->('keep-2'))),
              'keep_reports seen first: seen kept');
    ok(!exists $h->{delivery}, 'keep_reports seen first: no delivery yet');
    $res = $t->http(method => 'POST', path => '/keep',
        headers => [ 'Content-Type' => 'application/json' ],
        body => json_encode({ results => [ $EV{handset}->('keep-2') ] }));
    $h = $t->hgetall('keep:msg:{keep-2}');
    is_deeply(json_decode($h->{delivery}),
              json_decode(json_encode($EV{handset}->('keep-2'))),
              'keep_reports seen first: delivery kept after');
    is_deeply([ @$h{qw(status statusName)} ], [ 'SEEN', 'DELIVERED_TO_HANDSET' ],
              'keep_reports seen first: status stays SEEN');
}

$t->stop_nginx;
$t->check_logs;

done_testing;
