#!/usr/bin/perl
# Results of every shape the parser tells apart, through nginx: the Messages
# API form (event, destination), status groups by name (any case) or by id,
# status ids and names of the wrong type, the error object, members of the
# wrong type, repeated members and repeated "results", values that are not
# results; doneAt read as an instant in every form ISO 8601 allows here (the
# "dg" bookkeeping field shows the milliseconds); and with keep_reports, the
# raw report kept member for member, whatever its bytes and size.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::Local ();
use TikTokTest;

my $t = TikTokTest->new;
$t->start_redis;
$t->start_nginx(http => "    tiktok_reports_redis_timeout 5s;\n",
                server => <<'EOF');
        location = /open {
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

sub key { "tiktok:msg:{$_[0]}" }
sub hget { [ 'HGET', key($_[0]), $_[1] ] }

my $SEEN_AT = '2019-11-09T16:00:05.000+0000';
my $DONE_AT = '2023-09-26T10:52:15.799+0000';

# a result with a status object of the given members
sub dlr {
    my ($id, %status) = @_;
    return { messageId => $id, doneAt => $DONE_AT, status => \%status };
}

sub rejected {
    my ($name, $result, $error) = @_;
    return {
        name => $name, path => '/open', results => [ $result ],
        expect => { status => 200, body => '{"accepted":0,"duplicates":0,'
                    . '"rejected":[{"index":0,"error":"' . $error . '"}]}' },
        redis => [ [ 'DBSIZE' ] => sub { 1 } ],
    };
}

sub stored {
    my ($name, $result, %want) = @_;
    my $id = $result->{messageId};
    return {
        name => $name, path => '/open', results => [ $result ],
        expect => { status => 200, body => '{"accepted":1,"duplicates":0,"rejected":[]}' },
        redis => [ map { (hget($id, $_) => $want{$_}) } sort keys %want ],
    };
}

# --- the Messages API form ------------------------------------------------

run_cases($t,
    stored('event DELIVERY, destination for to',
           { messageId => 'api-1', event => 'DELIVERY', destination => '+385',
             status => { groupName => 'DELIVERED', id => 5,
                         name => 'DELIVERED_TO_HANDSET' },
             doneAt => '2023-09-26T10:52:15.799Z' },
           status => 'DELIVERED', statusName => 'DELIVERED_TO_HANDSET',
           doneAt => '2023-09-26T10:52:15.799Z'),
    stored('event SEEN with seenAt',
           { messageId => 'api-2', event => 'SEEN', seenAt => $SEEN_AT },
           status => 'SEEN', seenAt => $SEEN_AT),
    rejected('event DELIVERY without status',
             { messageId => 'api-3', event => 'DELIVERY', doneAt => $DONE_AT },
             'delivery report without status'),
    rejected('event SEEN without seenAt',
             { messageId => 'api-4', event => 'SEEN' },
             'seen report without seenAt'),
    stored('an event that is not a string is no event',
           { messageId => 'api-5', event => 5, seenAt => $SEEN_AT },
           status => 'SEEN'),
    stored('an event of another name is no event',
           { messageId => 'api-6', event => 'CLICK', seenAt => $SEEN_AT },
           status => 'SEEN'),
    rejected('event DELIVERY and seenAt, no status',
             { messageId => 'api-7', event => 'DELIVERY', seenAt => $SEEN_AT },
             'delivery report without status'),
    stored('status wins over seenAt and event SEEN',
           { messageId => 'api-8', event => 'SEEN', seenAt => $SEEN_AT,
             status => { groupName => 'PENDING' }, doneAt => $DONE_AT },
           status => 'PENDING'),
);

# --- status groups ----------------------------------------------------------

my $g = 0;
run_cases($t,
    (map {
        my ($group, $want) = @$_;
        stored("groupName \"$group\"", dlr('grp-' . ++$g, groupName => $group),
               status => $want);
    } ([ delivered => 'DELIVERED' ], [ Accepted => 'PENDING' ],
       [ pending => 'PENDING' ], [ undeliverable => 'UNDELIVERABLE' ],
       [ Rejected => 'REJECTED' ], [ eXpIrEd => 'EXPIRED' ])),
    (map {
        my ($id, $want) = @$_;
        stored("groupId $id", dlr('grp-' . ++$g, groupId => $id), status => $want);
    } ([ 1 => 'PENDING' ], [ 2 => 'UNDELIVERABLE' ], [ 3 => 'DELIVERED' ],
       [ 4 => 'EXPIRED' ], [ 5 => 'REJECTED' ])),
    stored('groupName wins over groupId', dlr('grp-' . ++$g, groupName => 'EXPIRED',
                                              groupId => 3),
           status => 'EXPIRED'),
    stored('a groupName that is not a string: groupId decides',
           dlr('grp-' . ++$g, groupName => 7, groupId => 3), status => 'DELIVERED'),
    stored('an unknown groupName: groupId decides',
           dlr('grp-' . ++$g, groupName => 'DELIVEREX', groupId => 1),
           status => 'PENDING'),
    map({
        my ($name, %status) = @$_;
        rejected($name, dlr('grp-' . ++$g, %status), 'unknown status group');
    } ([ 'groupId 6', groupId => 6 ], [ 'groupId 0', groupId => 0 ],
       [ 'groupId 33', groupId => 33 ], [ 'groupId "3"', groupId => '3' ],
       [ 'groupId 3.5', groupId => 3.5 ],
       [ 'groupName of another length', groupName => 'DELIVERED_TO_HANDSET' ],
       [ 'groupName of a known length', groupName => 'XENDING' ],
       [ 'groupName of length 8', groupName => 'ACCEPTEX' ],
       [ 'groupName of length 13', groupName => 'UNDELIVERABLX' ],
       [ 'no group at all', id => 5, name => 'DELIVERED_TO_HANDSET' ])),
);

# --- status id and name, the error object ---------------------------------

{
    # the event's field: "@d<status.id> <doneAt>", "-" for no usable id
    my $tl = sub {
        my ($want) = @_;
        return sub { ref $_[0] && grep { index($_, $want) == 0 } @{ $_[0] } };
    };
    my $n = 0;
    run_cases($t,
        map({
            my ($name, $id, $want) = @$_;
            my $mid = 'sid-' . ++$n;
            {
                name => "status.id $name", path => '/open',
                results => [ dlr($mid, groupName => 'DELIVERED', id => $id) ],
                expect => { status => 200, json => { accepted => 1 } },
                redis => [ [ 'HKEYS', "tiktok:msg:{$mid}" ]
                           => $tl->($want eq 'null' ? '@d- ' : "\@d$want ") ],
            }
        } ([ 'a number', 7, 7 ], [ 'zero', 0, 0 ], [ 'a string', '5', 'null' ],
           [ 'a fraction', 5.5, 'null' ], [ 'negative', -1, 'null' ],
           [ 'of 19 digits', 1234567890123456789, 'null' ],
           [ 'null', undef, 'null' ], [ 'an object', { a => 1 }, 'null' ])),
    );
    my $dlr = sub {
        my ($mid, %o) = @_;
        my $r = dlr($mid, groupName => 'REJECTED', id => 6, %{ $o{status} || {} });
        $r->{error} = $o{error} if exists $o{error};
        $r->{messageId} = $mid;
        return $r;
    };
    run_cases($t,
        stored('status.name not a string: empty',
               $dlr->('sn-1', status => { name => [ 'x' ] }), statusName => ''),
        stored('error.permanent true', $dlr->('err-1', error => { name => 'EC_X',
                                                                 permanent => JSON::PP::true }),
               errorName => 'EC_X', errorPermanent => 'true'),
        stored('error.permanent "true" (a string) is not true',
               $dlr->('err-2', error => { permanent => 'true' }),
               errorPermanent => 'false', errorName => 'NO_ERROR'),
        stored('error.name not a string: NO_ERROR',
               $dlr->('err-3', error => { name => 17, permanent => JSON::PP::false }),
               errorName => 'NO_ERROR', errorPermanent => 'false'),
        stored('error null: none', $dlr->('err-4', error => undef),
               errorName => 'NO_ERROR', errorPermanent => 'false'),
        stored('error repeated: the last one', {
                   messageId => 'err-5', doneAt => $DONE_AT,
                   status => { groupName => 'REJECTED' },
               }, errorName => 'NO_ERROR'),
        {
            name => 'error repeated: the last one counts', path => '/open',
            body => '{"results":[{"messageId":"err-6","doneAt":"' . $DONE_AT . '",'
                  . '"error":{"name":"FIRST","permanent":true},'
                  . '"status":{"groupName":"REJECTED","name":"R","id":6,'
                  . '"extra":{"name":"nested","id":1,"groupName":"PENDING"}},'
                  . '"error":{"name":"SECOND"}}]}',
            expect => { status => 200, json => { accepted => 1 } },
            redis => [ hget('err-6', 'errorName') => 'SECOND',
                       hget('err-6', 'errorPermanent') => 'false',
                       hget('err-6', 'statusName') => 'R',
                       hget('err-6', 'status') => 'REJECTED' ],
        },
    );
}

# --- members of the wrong type, repeated members, odd containers ---------

run_cases($t,
    rejected('messageId an object', { messageId => { a => 1 }, seenAt => $SEEN_AT },
             'messageId is not a string'),
    rejected('messageId an array', { messageId => [ 'a' ], seenAt => $SEEN_AT },
             'messageId is not a string'),
    rejected('messageId null', { messageId => undef, seenAt => $SEEN_AT },
             'messageId is not a string'),
    rejected('messageId true', { messageId => JSON::PP::true, seenAt => $SEEN_AT },
             'messageId is not a string'),
    rejected('status an array', { messageId => 'st-1', status => [ 1 ] },
             'status is not an object'),
    rejected('status null', { messageId => 'st-2', status => undef, seenAt => $SEEN_AT },
             'status is not an object'),
    {
        name => 'messageId repeated, a string last', path => '/open',
        body => '{"results":[{"messageId":5,"seenAt":"' . $SEEN_AT . '",'
              . '"messageId":"rep-1"}]}',
        expect => { status => 200, json => { accepted => 1 } },
        redis => [ hget('rep-1', 'status') => 'SEEN' ],
    },
    {
        name => 'messageId repeated, a number last', path => '/open',
        body => '{"results":[{"messageId":"rep-2","seenAt":"' . $SEEN_AT . '",'
              . '"messageId":5}]}',
        expect => { status => 200, json => { rejected => [
            { index => 0, error => 'messageId is not a string' } ] } },
        redis => [ [ 'EXISTS', key('rep-2') ] => 0 ],
    },
    {
        name => 'status repeated, an object last', path => '/open',
        body => '{"results":[{"messageId":"rep-3","status":"x",'
              . '"status":{"groupName":"DELIVERED"},"doneAt":"' . $DONE_AT . '"}]}',
        expect => { status => 200, json => { accepted => 1 } },
        redis => [ hget('rep-3', 'status') => 'DELIVERED' ],
    },
    {
        name => 'status repeated, a string last', path => '/open',
        body => '{"results":[{"messageId":"rep-4","status":{"groupName":"DELIVERED"},'
              . '"status":"x"}]}',
        expect => { status => 200, json => { rejected => [
            { index => 0, error => 'status is not an object' } ] } },
    },
    {
        name => 'callbackData not a string: none', path => '/open',
        results => [ { messageId => 'cbt-1', seenAt => $SEEN_AT,
                       callbackData => { a => 1 } } ],
        expect => { status => 200, json => { accepted => 1 } },
        redis => [ [ 'HEXISTS', key('cbt-1'), 'callbackData' ] => 0 ],
    },
    {
        name => 'seenAt not a string: not a seen report', path => '/open',
        results => [ { messageId => 'sat-1', seenAt => 17 } ],
        expect => { status => 200, json => { rejected => [
            { index => 0, error => 'neither a delivery nor a seen report' } ] } },
    },
    {
        name => '"results" repeated: the last one counts', path => '/open',
        body => '{"results":[{"messageId":"rr-1","seenAt":"' . $SEEN_AT . '"}],'
              . '"other":{"results":[1]},'
              . '"results":[{"messageId":"rr-2","seenAt":"' . $SEEN_AT . '"}]}',
        expect => { status => 200, body => '{"accepted":1,"duplicates":0,"rejected":[]}' },
        redis => [ [ 'EXISTS', key('rr-1') ] => 0,
                   hget('rr-2', 'status') => 'SEEN' ],
    },
    {
        name => '"results" an array, then not', path => '/open',
        body => '{"results":[{"messageId":"rr-3","seenAt":"' . $SEEN_AT . '"}],'
              . '"results":{}}',
        expect => { status => 400, body => '{"error":"results is not an array"}' },
        redis => [ [ 'EXISTS', key('rr-3') ] => 0 ],
    },
    {
        name => 'values that are not results, and what is inside them', path => '/open',
        body => '{"results":[[{"messageId":"in-1","seenAt":"' . $SEEN_AT . '"}],'
              . '"s",null,true,1.5,{"messageId":"in-2","seenAt":"' . $SEEN_AT . '",'
              . '"deep":[{"messageId":"in-3","status":{"groupName":"SEEN"}},[[]],{}]}]}',
        expect => { status => 200, body => '{"accepted":1,"duplicates":0,"rejected":['
            . join(',', map { qq({"index":$_,"error":"result is not an object"}) } 0 .. 4)
            . ']}' },
        redis => [ [ 'EXISTS', key('in-1') ] => 0, [ 'EXISTS', key('in-3') ] => 0,
                   hget('in-2', 'status') => 'SEEN' ],
    },
    {
        name => 'a top-level array', path => '/open', body => '[]',
        expect => { status => 400, body => '{"error":"body is not a JSON object"}' },
    },
    {
        name => 'top-level null', path => '/open', body => 'null',
        expect => { status => 400, body => '{"error":"body is not a JSON object"}' },
    },
    {
        name => 'a key that is not UTF-8', path => '/open',
        body => qq({"results":[{"messageId":"k-1","seenAt":"$SEEN_AT","\xed\xa0\x80":1}]}),
        expect => { status => 400, body => '{"error":"invalid UTF-8 in a string"}' },
        redis => [ [ 'EXISTS', key('k-1') ] => 0 ],
    },
    {
        name => 'a top-level key that is not UTF-8', path => '/open',
        body => qq({"\xc0\x80":1,"results":[]}),
        expect => { status => 400, body => '{"error":"invalid UTF-8 in a string"}' },
    },
);

# --- doneAt as an instant ---------------------------------------------------

{
    my $ms = sub {
        my ($y, $mo, $d, $h, $mi, $s, $frac, $off) = @_;
        return (Time::Local::timegm($s == 60 ? 59 : $s, $mi, $h, $d, $mo - 1, $y)
                + ($s == 60 ? 1 : 0) - ($off // 0)) * 1000 + ($frac // 0);
    };
    my @times = (
        [ '2023-09-26T10:52:15.799+0000', $ms->(2023, 9, 26, 10, 52, 15, 799) ],
        [ '2023-09-26T10:52:15Z', $ms->(2023, 9, 26, 10, 52, 15) ],
        [ '2023-09-26T10:52:15', $ms->(2023, 9, 26, 10, 52, 15) ],
        [ '2023-09-26T10:52:15.7Z', $ms->(2023, 9, 26, 10, 52, 15, 700) ],
        [ '2023-09-26T10:52:15.12Z', $ms->(2023, 9, 26, 10, 52, 15, 120) ],
        [ '2023-09-26T10:52:15.123456789+00:00', $ms->(2023, 9, 26, 10, 52, 15, 123) ],
        [ '2023-09-26T10:52:15+0530', $ms->(2023, 9, 26, 10, 52, 15, 0, 19800) ],
        [ '2023-09-26T10:52:15-03:00', $ms->(2023, 9, 26, 10, 52, 15, 0, -10800) ],
        [ '2024-02-29T00:00:00Z', $ms->(2024, 2, 29, 0, 0, 0) ],
        [ '2000-02-29T23:59:59Z', $ms->(2000, 2, 29, 23, 59, 59) ],
        [ '2016-12-31T23:59:60Z', $ms->(2016, 12, 31, 23, 59, 60) ],
        [ '1969-12-31T23:59:59.999Z', -1 ],
        [ '0000-01-01T00:00:00Z', -62167219200000 ],
        [ '0000-03-01T00:00:00Z', -62162035200000 ],    # year 0 is a leap year
        [ '2023-09-26T10:52:15.1234567890Z', '' ],
        [ '2023-09-26T10:52:15.Z', '' ],
        [ '2023-09-26T10:52:15+2400', '' ],
        [ '2023-09-26T10:52:15+0560', '' ],
        [ '2023-09-26T10:52:15+05:3', '' ],
        [ '2023-09-26T10:52:15+05', '' ],
        [ '2023-09-26T10:52:15 ', '' ],
        [ '2023-02-29T00:00:00Z', '' ],
        [ '1900-02-29T00:00:00Z', '' ],
        [ '2023-13-01T00:00:00Z', '' ],
        [ '2023-00-10T00:00:00Z', '' ],
        [ '2023-04-31T00:00:00Z', '' ],
        [ '2023-09-00T00:00:00Z', '' ],
        [ '2023-09-26T24:00:00Z', '' ],
        [ '2023-09-26T10:60:00Z', '' ],
        [ '2023-09-26T10:52:61Z', '' ],
        [ '2023-09-26 10:52:15Z', '' ],
        [ '2023-9-26T10:52:15Z', '' ],
        [ 'abcd-09-26T10:52:15Z', '' ],
        [ '2023-09-26T10:52', '' ],
        [ '', '' ],
    );
    my $n = 0;
    run_cases($t, map {
        my ($at, $want) = @$_;
        my $id = 'time-' . ++$n;
        {
            name => "doneAt '$at'", path => '/open',
            results => [ { messageId => $id, doneAt => $at,
                           status => { groupName => 'DELIVERED', id => 5 } } ],
            expect => { status => 200, json => { accepted => 1 } },
            redis => [ hget($id, 'doneAt') => $at,
                       hget($id, 'dg') => "D:$want" ],
        }
    } @times);

    # instants, not strings: the same moment in two offsets, and the later
    # one first
    run_cases($t,
        stored('DELIVERED_TO_OPERATOR at 10:52:11 UTC',
               { messageId => 'inst-1', doneAt => '2023-09-26T12:52:11.000+02:00',
                 status => { groupName => 'DELIVERED', id => 2,
                             name => 'DELIVERED_TO_OPERATOR' } },
               statusName => 'DELIVERED_TO_OPERATOR'),
        stored('DELIVERED_TO_HANDSET at 10:52:12 UTC, written earlier in the day',
               { messageId => 'inst-1', doneAt => '2023-09-26T07:52:12.000-03:00',
                 status => { groupName => 'DELIVERED', id => 5,
                             name => 'DELIVERED_TO_HANDSET' } },
               statusName => 'DELIVERED_TO_HANDSET'),
        stored('a report without a readable doneAt does not replace the details',
               { messageId => 'inst-1', doneAt => 'later',
                 status => { groupName => 'DELIVERED', id => 9, name => 'LATE' } },
               statusName => 'DELIVERED_TO_HANDSET'),
    );
}

# --- raw reports kept as sent ----------------------------------------------

{
    my $odd = {
        messageId => 'raw-1', doneAt => $DONE_AT,
        status => { groupName => 'DELIVERED', id => 5, name => 'DELIVERED_TO_HANDSET' },
        "quote\"key\\" => "ctl \x01\x08\x0c\n\r\t \x1f \"q\" \\ / \x{e9}\x{1f600}",
        numbers => [ 0, -1, 1.5, 1e300, -2.5E-3 ], flags => [ JSON::PP::true,
                                                            JSON::PP::false, undef ],
        empty => { o => {}, a => [] },
        nested => [ [ [ { deep => [ 1, { deeper => 'x' } ] } ] ] ],
    };
    my $big = sub {
        my ($id, $size) = @_;
        return { messageId => $id, seenAt => $SEEN_AT, pad => 'p' x $size };
    };
    my @results = ($odd, $big->('raw-2', 3000), $big->('raw-3', 3000),
                   $big->('raw-4', 20000), { messageId => 'raw-5', seenAt => $SEEN_AT });
    my $res = $t->http(method => 'POST', path => '/keep',
                       headers => [ 'Content-Type' => 'application/json' ],
                       body => JSON::PP->new->utf8->encode({ results => \@results }));
    is($res->{body}, '{"accepted":5,"duplicates":0,"rejected":[]}',
       'keep_reports: five reports of odd content and size accepted');
    my $canon = JSON::PP->new->canonical;
    for my $r (@results) {
        my $field = $r->{status} ? 'delivery' : 'seen';
        my $got = $t->redis('HGET', "keep:msg:{$r->{messageId}}", $field);
        my $dec = eval { json_decode($got) };
        is($dec && $canon->encode($dec), $canon->encode($r),
           "keep_reports: $r->{messageId} kept member for member");
        unlike($got // '', qr/[\x00-\x1f]/,
               "keep_reports: $r->{messageId} kept with control characters escaped");
    }
}

$t->stop_nginx;
$t->check_logs;

done_testing;
