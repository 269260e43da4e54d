#!/usr/bin/perl
# Ids in a lookup's query string are form-encoded: "+" is a space (as HTML
# forms, URLSearchParams and urlencode send it) and "%2B" is a plus.  In the
# path, "+" is a plus.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use TikTokTest;

my $t = TikTokTest->new;
$t->start_redis;
$t->start_nginx(server => <<'EOF2');
        location = /webhook {
            tiktok_reports_webhook;
            tiktok_reports_signature off;
        }
        location /st/ {
            tiktok_reports_status;
        }
EOF2

my $res = $t->http(method => 'POST', path => '/webhook',
    headers => [ 'Content-Type' => 'application/json' ],
    body => json_encode({ results => [ tiktok_dlr(id => 'a b'),
                                       tiktok_seen(id => 'a+b') ] }));
is($res->{status}, 200, 'stored "a b" (delivered) and "a+b" (seen)');

sub ids {
    my ($path) = @_;
    my $r = $t->http(path => $path);
    my $j = eval { json_decode($r->{body}) } || {};
    return [ map { [ $_->{messageId}, $_->{status} // 'unknown' ] }
             @{ $j->{results} || [ $j ] } ];
}

is_deeply(ids('/st/?id=a+b'), [ [ 'a b', 'DELIVERED' ] ],
          'query: "+" is a space');
is_deeply(ids('/st/?id=a%2Bb'), [ [ 'a+b', 'SEEN' ] ],
          'query: "%2B" is a plus');
is_deeply(ids('/st/?id=a%20b&id=a%2Bb&id=a+b'),
          [ [ 'a b', 'DELIVERED' ], [ 'a+b', 'SEEN' ], [ 'a b', 'DELIVERED' ] ],
          'query: "%20", "%2B" and "+" side by side, in request order');
is_deeply(ids('/st/?id=++'), [ [ '  ', 'unknown' ] ],
          'query: pluses alone are spaces');
is_deeply(ids('/st/a+b'), [ [ 'a+b', 'SEEN' ] ], 'path: "+" is a plus');
is_deeply(ids('/st/a%20b'), [ [ 'a b', 'DELIVERED' ] ], 'path: "%20" is a space');

$t->stop_nginx;
$t->check_logs;

done_testing;
