#!/usr/bin/perl
# A rolling upgrade as docs/operations.md says: the previous release
# (built by .ci/build-prev, given in TT_PREV_MODULE) and this one with
# "tiktok_reports_timeline lines" on the same Redis, reports of the same
# messages going to either, out of order and twice.  Nothing is lost and
# nothing is duplicated: each message's hash ends as one writer alone would
# leave it, the feed has one entry per change, and every entry this version
# writes carries the seq the message's changes so far give, also after the
# old version changed the status in between.  Then the old one is gone and
# this one stores events as fields: retried old events are duplicates, new
# ones join the old lines in the lookup, in order.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use TikTokTest;

my $prev = $ENV{TT_PREV_MODULE};
plan skip_all => 'no earlier release built (TT_PREV_MODULE, .ci/build-prev)'
    unless $prev && -f $prev;

my $server = <<'EOF2';
        location = /webhook {
            tiktok_reports_webhook;
            tiktok_reports_signature off;
        }
        location /status/ {
            tiktok_reports_status;
        }
EOF2

my $t = TikTokTest->new;
$t->start_redis;
$t->start_nginx(server => $server, http => 'tiktok_reports_timeline lines;');

# the earlier release: its own nginx, the same Redis
my $old = TikTokTest->new;
$old->{redis_port} = $t->redis_port;
$old->start_nginx(server => $server, module => $prev);

sub post {
    my ($h, @results) = @_;
    my $r = $h->http(method => 'POST', path => '/webhook',
                     headers => [ 'Content-Type' => 'application/json' ],
                     body => json_encode({ results => \@results }));
    is($r->{status}, 200, 'stored') or diag($r->{body});
    return json_decode($r->{body});
}

srand(20261202);
my @ids = map { "up-$$-$_" } 1 .. 30;
my %events;
for my $id (@ids) {
    $events{$id} = [
        tiktok_dlr(id => $id, group => 'PENDING', name => 'PENDING_ENROUTE',
                   status_id => 7, doneAt => '2023-09-26T10:52:15.100+0000'),
        tiktok_dlr(id => $id),
        tiktok_seen(id => $id),
    ];
}

# in order, each event to either version, and every third one again
my ($accepted, $duplicates) = (0, 0);
for my $step (0 .. 2) {
    for my $id (@ids) {
        my $h = rand() < 0.5 ? $t : $old;
        my $a = post($h, $events{$id}[$step]);
        $accepted += $a->{accepted};
        $duplicates += $a->{duplicates};
        if (rand() < 0.33) {
            my $b = post(rand() < 0.5 ? $t : $old, $events{$id}[$step]);
            $accepted += $b->{accepted};
            $duplicates += $b->{duplicates};
        }
    }
}
is($accepted, 90, 'each event accepted once, by whichever version took it');

# the feed: one entry per change; this version's carry the right seq
my %feed;
for my $e (@{ $t->redis('XRANGE', 'tiktok:events', '-', '+') }) {
    my %f = @{ $e->[1] };
    push @{ $feed{ $f{messageId} } }, \%f;
}
my ($with_seq, $wrong) = (0, 0);
for my $id (@ids) {
    my $f = $feed{$id} || [];
    is_deeply([ map { $_->{status} } @$f ], [ qw(PENDING DELIVERED SEEN) ],
              "$id: three changes in the feed, once each");
    for my $i (0 .. $#$f) {
        next unless defined $f->[$i]{seq};
        $with_seq++;
        $wrong++ if $f->[$i]{seq} != $i + 1;
    }
    my $h = $t->hgetall("tiktok:msg:{$id}");
    is($h->{status}, 'SEEN', "$id: SEEN");
    is(scalar @{ json_decode($t->http(path => "/status/$id")->{body})->{timeline} },
       3, "$id: three events in the lookup's timeline");
}
ok($with_seq > 10, "entries from this version carry seq ($with_seq)");
is($wrong, 0, 'each seq is the count of the changes so far');

# both versions render the same message alike
for my $id (@ids[0 .. 4]) {
    is($old->http(path => "/status/$id")->{body},
       $t->http(path => "/status/$id")->{body},
       "$id: both lookups agree");
}

# the upgrade done: events as fields of their own from now on
$old->stop_nginx;
$t->stop_nginx;
$t->start_nginx(server => $server);

my $again = 0;
for my $id (@ids[0 .. 9]) {
    my $a = post($t, @{ $events{$id} });
    $again += $a->{duplicates};
    post($t, tiktok_seen(id => $id, seenAt => '2019-11-09T16:00:09.000+0000'));
    my $h = $t->hgetall("tiktok:msg:{$id}");
    ok(exists $h->{'@s 1573315209000'},
       "$id: a new event in a field of its own");
    my $tl = json_decode($t->http(path => "/status/$id")->{body})->{timeline};
    is_deeply([ map { $_->{at} } @$tl ],
              [ '2023-09-26T10:52:15.100+0000', '2023-09-26T10:52:15.799+0000',
                '2019-11-09T16:00:05.000+0000', '2019-11-09T16:00:09.000+0000' ],
              "$id: the lookup shows the three lines, then the new event");
}
is($again, 30, 'the old events sent again: all duplicates');

my $fresh = "up-$$-fresh";
post($t, tiktok_dlr(id => $fresh));
my $h = $t->hgetall("tiktok:msg:{$fresh}");
ok(!exists $h->{timeline} && exists $h->{'@d5 1695725535799'},
   'a new message: its event in a field, no timeline lines');

$t->stop_nginx;
$t->check_logs;
$old->check_logs;

done_testing;
