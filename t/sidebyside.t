#!/usr/bin/perl
# The transition of 0.3.0 (events as fields) side by side with 0.2.0's
# (timeline lines; built by .ci/build-prev, given in TT_PREV_MODULE), on
# random sequences of reports: each body is posted to both (two nginx, one
# Redis, two key prefixes), and they must give the same answers, the same
# messages as the lookup renders them (receivedAt and updatedAt aside: the
# two are not written at the same ms), and the same changes in the feed.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use TikTokTest;

my $prev = $ENV{TT_PREV_MODULE};
plan skip_all => 'no earlier release built (TT_PREV_MODULE, .ci/build-prev)'
    unless $prev && -f $prev;

sub server {
    my ($prefix) = @_;
    return <<"EOF";
        location = /webhook {
            tiktok_reports_webhook;
            tiktok_reports_signature off;
            tiktok_reports_key_prefix "$prefix";
        }
        location /status/ {
            tiktok_reports_status;
            tiktok_reports_key_prefix "$prefix";
        }
EOF
}

my $t = TikTokTest->new;
$t->start_redis;
$t->start_nginx(server => server('new:'));
my $old = TikTokTest->new;
$old->{redis_port} = $t->redis_port;
$old->start_nginx(server => server('old:'), module => $prev);

srand($ENV{TT_SEED} || 20261202);

# the reports one message can get: every group, two names of DELIVERED
# (same group, other doneAt), seen twice with other times, odd offsets
my @kinds = (
    sub { tiktok_dlr(id => $_[0], group => 'PENDING', name => 'PENDING_ENROUTE',
                     status_id => 7, doneAt => '2023-09-26T10:52:15.100+0000') },
    sub { tiktok_dlr(id => $_[0], name => 'DELIVERED_TO_OPERATOR', status_id => 2,
                     doneAt => '2023-09-26T10:52:15.500+0000') },
    sub { tiktok_dlr(id => $_[0], doneAt => '2023-09-26T07:52:15.799-0300') },
    sub { tiktok_dlr(id => $_[0], group => 'UNDELIVERABLE',
                     name => 'UNDELIVERABLE_NOT_DELIVERED', status_id => 9,
                     error_name => 'EC_ABSENT_SUBSCRIBER', permanent => 1,
                     doneAt => '2023-09-26T10:52:16.000+0000') },
    sub { tiktok_dlr(id => $_[0], group => 'EXPIRED', name => 'EXPIRED_EXPIRED',
                     status_id => 15, doneAt => '2023-09-27T10:52:15.000+0000') },
    sub { tiktok_dlr(id => $_[0], group => 'REJECTED', name => 'REJECTED_NETWORK',
                     status_id => 6, doneAt => '2023-09-26T10:52:17.000Z',
                     callbackData => 'cb-1') },
    sub { tiktok_seen(id => $_[0], seenAt => '2023-09-26T10:53:00.000+0000') },
    sub { tiktok_seen(id => $_[0], seenAt => '2023-09-26T10:54:00.000+0000') },
);

sub post {
    my ($h, @results) = @_;
    my $r = $h->http(method => 'POST', path => '/webhook',
                     headers => [ 'Content-Type' => 'application/json' ],
                     body => json_encode({ results => \@results }));
    return "$r->{status} $r->{body}";
}

my @ids = map { "sbs-$$-$_" } 1 .. 40;
my ($bodies, $same) = (0, 0);
for (1 .. 150) {
    # a body of 1 to 5 reports of random messages, some repeated
    my @r = map { $kinds[int rand @kinds]->($ids[int rand @ids]) } 1 .. 1 + int rand 5;
    my $a = post($old, @r);
    my $b = post($t, @r);
    $bodies++;
    if ($a eq $b) { $same++ } else { diag("old: $a\nnew: $b") if $same + 3 > $bodies }
}
is($same, $bodies, "$bodies random bodies: the same answers from both");

sub norm {
    my ($body) = @_;
    my $j = json_decode($body);
    delete $j->{updatedAt};
    delete $_->{receivedAt} for @{ $j->{timeline} || [] };
    return $j;
}

my $diff = 0;
for my $id (@ids) {
    my $a = $old->http(path => "/status/$id");
    my $b = $t->http(path => "/status/$id");
    next if $a->{status} == 404 && $b->{status} == 404;
    unless ($a->{status} == $b->{status}
            && eq_deeply_json(norm($a->{body}), norm($b->{body})))
    {
        $diff++;
        diag("$id\nold: $a->{body}\nnew: $b->{body}") if $diff <= 2;
    }
}
is($diff, 0, 'every message the same through the lookup');

sub eq_deeply_json { json_encode($_[0]) eq json_encode($_[1]) }

# the feed: the same changes of each message, in order; seq counts them
my (%feed, $seqs);
for my $e (@{ $t->redis('XRANGE', 'new:events', '-', '+') }) {
    my %f = @{ $e->[1] };
    push @{ $feed{new}{ $f{messageId} } }, "$f{previous}>$f{status}\@$f{at}";
    $seqs++ if $f{seq} == @{ $feed{new}{ $f{messageId} } };
}
for my $e (@{ $t->redis('XRANGE', 'old:events', '-', '+') }) {
    my %f = @{ $e->[1] };
    push @{ $feed{old}{ $f{messageId} } }, "$f{previous}>$f{status}\@$f{at}";
}
is_deeply($feed{new}, $feed{old}, 'the same changes in both feeds');
my $n = 0;
$n += @$_ for values %{ $feed{new} };
is($seqs, $n, "... and each of the $n entries carries its seq");

# the new hashes are listpacks; the old ones, with their lines, are not
my @enc = map { $t->redis('OBJECT', 'ENCODING', "new:msg:{$_}") // '' } @ids;
is(scalar(grep { $_ eq 'hashtable' } @enc), 0, 'no new hash is a hashtable');

$old->stop_nginx;
$t->stop_nginx;
$t->check_logs;
$old->check_logs;

done_testing;
